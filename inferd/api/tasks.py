"""One unary task request seen from the API (speech, OCR, classification, ...): shared by the
native route and the OpenAI audio routes."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError, from_engine_event
from inferd.api.gateway import Gateway
from inferd.billing.pricing import task_cost

MediaKind = Literal["image", "audio"]


async def store_images(gateway: Gateway, request: Request, images: list[str]) -> list[str]:
    """Generated images (base64 PNG from the worker) → short-lived unguessable URLs. The file
    writes run off the event loop."""
    names = await asyncio.to_thread(
        lambda: [gateway.blobs.put(base64.b64decode(b), "png") for b in images]
    )
    return [gateway.blob_url(request, name) for name in names]


@dataclass
class TaskOutcome:
    output: dict[str, Any]
    request_id: str
    runtime_ms: int
    cost: float
    input_tokens: int
    output_tokens: int

    def inference_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "status": "succeeded",
            "runtime_ms": self.runtime_ms,
            "cost": self.cost,
        }
        if self.input_tokens:
            status["tokens_input"] = self.input_tokens
        return status


async def run_task(
    gateway: Gateway,
    request: Request,
    model: str,
    task: str,
    inputs: dict[str, Any],
    media: dict[str, MediaKind],
    *,
    text_bound: int = 0,
) -> TaskOutcome:
    """auth → limits → media checks → the worker → cost. `media` names the binary fields."""
    admission = await gateway.admit(request, model, (task,), prompt_bound=text_bound)
    status, input_tokens, output_tokens, cost = 500, 0, 0, 0.0
    try:
        payload_inputs = dict(inputs)
        for name, kind in media.items():
            if inputs.get(name) is None:
                raise APIError(400, f"`{name}` is required.", param=name)
            loader = gateway.media.image if kind == "image" else gateway.media.audio
            data = await loader(inputs[name], name)
            payload_inputs[name] = base64.b64encode(data).decode()
        call = await gateway.submit(admission, {"kind": "task", "inputs": payload_inputs})
        try:
            event = await unless_disconnected(request, call.result())
        finally:
            call.close()
        if event["ev"] == "error":
            raise from_engine_event(event)
        if event["ev"] != "result":
            raise APIError(500, "The model answered out of order.", code="protocol_error")
        input_tokens = int(event.get("input_tokens", 0))
        output_tokens = int(event.get("output_tokens", 0))
        cost = task_cost(admission.spec.price, input_tokens, output_tokens, event.get("units", {}))
        status = 200
    except APIError as exc:
        status = exc.status
        raise
    finally:
        await admission.finish(status, input_tokens, output_tokens, cost)
    request.scope["state"].update(
        request_id=admission.request_id, prompt_tokens=input_tokens, cost=cost
    )
    return TaskOutcome(
        event["output"],
        admission.request_id,
        admission.runtime_ms,
        cost,
        input_tokens,
        output_tokens,
    )
