"""Unary tasks on the serving path (speech, OCR, classification, images, ...): shared by the
native route, the OpenAI audio and image routes, and jobs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferd.billing.pricing import task_cost
from inferd.requests import TaskDone, TaskRequest
from inferd.serving.admission import Admission
from inferd.serving.errors import RequestError

if TYPE_CHECKING:
    from inferd.serving.core import Serving


@dataclass
class TaskOutcome:
    admission: Admission
    output: dict[str, Any]
    files: list[bytes]  # binary outputs (images, audio)
    cost: float
    input_tokens: int
    runtime_ms: int

    @property
    def request_id(self) -> str:
        return self.admission.request_id


async def run_task(serving: Serving, admission: Admission, request: TaskRequest) -> TaskOutcome:
    status, input_tokens, output_tokens, cost = 500, 0, 0, 0.0
    try:
        event = await serving.unary(admission, request, TaskDone)
        usage = event.usage
        input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        cost = task_cost(admission.spec.price, usage)
        status = 200
    except RequestError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    finally:
        await admission.finish(status, input_tokens, output_tokens, cost)
    return TaskOutcome(
        admission, event.output, event.files, cost, input_tokens, admission.runtime_ms
    )
