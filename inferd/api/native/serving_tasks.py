"""POST /v1/inference/{model} for the unary tasks: JSON or multipart in, the task's output plus
`request_id` and `inference_status` out."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.gateway import Gateway
from inferd.api.native.task_protocol import TASKS
from inferd.api.responses import JSONResponse
from inferd.api.tasks import run_task, store_images
from inferd.catalog import ModelSpec


async def infer_task(gateway: Gateway, request: Request, spec: ModelSpec, data: dict) -> Response:
    request.scope.setdefault("state", {})["route"] = "native_" + spec.task.replace("-", "_")
    request_type, media = TASKS[spec.task]
    body = gateway.validate(request_type, data)
    inputs = body.model_dump()
    text = sum(len(v.encode()) for v in inputs.values() if isinstance(v, str) and v not in media)
    outcome = await run_task(gateway, request, spec.name, spec.task, inputs, media, text_bound=text)
    output: dict[str, Any] = dict(outcome.output)
    if spec.task == "text-to-image":
        output["images"] = await store_images(gateway, request, output["images"])
    if spec.task == "text-to-speech":
        output["audio"] = f"data:{output['content_type']};base64,{output['audio']}"
    return JSONResponse(
        {
            "request_id": outcome.request_id,
            "inference_status": outcome.inference_status(),
            **output,
        }
    )
