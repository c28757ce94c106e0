"""POST /v1/inference/{model} for the unary tasks: JSON or multipart in, the task's output plus
`request_id` and `inference_status` out. Binary outputs (images, audio) come back inline as
data URLs: the clients (`deepinfra` npm, the AI SDK) decode them, and nothing is stored."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.caps import check_audio_seconds, check_caps
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.native.task_protocol import TASKS, MediaKind
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.catalog import ModelSpec
from inferd.requests import TASK_TYPES, TaskRequest, Transcribe
from inferd.serving import RequestMeta
from inferd.serving.tasks import TaskOutcome


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


async def task_request(
    gateway: Gateway, task: str, body: BaseModel, media: dict[str, MediaKind]
) -> TaskRequest:
    """A validated wire body as the task's neutral request, media fetched and checked."""
    fields: dict[str, Any] = {}
    for name in TASK_TYPES[task].__struct_fields__:
        value = getattr(body, name)
        kind = media.get(name)
        if kind is not None:
            if value is None:
                raise APIError(400, f"`{name}` is required.", param=name)
            loader = gateway.media.image if kind == "image" else gateway.media.audio
            value = await loader(value, name)
        fields[name] = value
    return TASK_TYPES[task](**fields)


def inference_status(outcome: TaskOutcome) -> dict[str, Any]:
    status: dict[str, Any] = {
        "status": "succeeded",
        "runtime_ms": outcome.runtime_ms,
        "cost": outcome.cost,
    }
    if outcome.input_tokens:
        status["tokens_input"] = outcome.input_tokens
    return status


async def infer_task(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    spec: ModelSpec,
    data: dict,
    meta: RequestMeta,
) -> Response:
    request_type, media = TASKS[spec.task]
    body = gateway.validate(request_type, data)
    neutral = await task_request(gateway, spec.task, body, media)
    check_caps(gateway.settings, neutral)
    if isinstance(neutral, Transcribe):
        await asyncio.to_thread(check_audio_seconds, gateway.settings, neutral.audio, "audio")
    outcome = await unless_disconnected(
        request, gateway.serving.run_task(principal, spec, neutral, meta)
    )
    output: dict[str, Any] = dict(outcome.output)
    if spec.task == "text-to-image":
        output["images"] = [data_url("image/png", png) for png in outcome.files]
    if spec.task == "text-to-speech":
        output["audio"] = data_url(output["content_type"], outcome.files[0])
    return JSONResponse(
        {"request_id": outcome.request_id, "inference_status": inference_status(outcome), **output}
    )
