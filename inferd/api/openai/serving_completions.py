"""POST /v1/openai/completions (legacy completions)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.disconnect import unless_disconnected
from inferd.api.gateway import Gateway
from inferd.api.generation import OPENAI_FINISH, Generation, GenerationFailed, start_generation
from inferd.api.openai.protocol import CompletionRequest
from inferd.api.responses import JSONResponse


async def create_completion(gateway: Gateway, request: Request) -> Response:
    body = await gateway.read_json(request, CompletionRequest)
    request.scope.setdefault("state", {})["route"] = "completions"
    body.refuse_unsupported()
    params = body.sampling_params(gateway.settings.max_output_tokens)
    admission = await gateway.admit(
        request,
        body.model,
        ("text-generation",),
        prompt_bound=body.prompt_bound(),
        max_output=params["max_tokens"],
    )
    generation = await start_generation(
        gateway,
        admission,
        request,
        {"kind": "generate", "prompt": body.prompt_text, "params": params},
    )
    completion_id = "cmpl-" + admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(generation, body, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    try:
        await unless_disconnected(request, generation.collect())
    except GenerationFailed as exc:
        await generation.aclose(exc.error.status)
        return exc.error.response()
    except BaseException:
        await generation.aclose(499)
        raise
    await generation.aclose()
    return JSONResponse(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": admission.spec.name,
            "choices": [
                {
                    "index": 0,
                    "text": generation.text,
                    "finish_reason": OPENAI_FINISH.get(generation.finish_reason or "", "stop"),
                    "logprobs": None,
                }
            ],
            "usage": generation.usage(),
        }
    )


async def _stream(
    generation: Generation, body: CompletionRequest, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = generation.admission.spec.name

    def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
        return sse.frame(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
        )

    failed: int | None = None
    try:
        try:
            async for items in generation.items():
                text = "".join(item[1] for item in items)
                if text:
                    yield chunk(text)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(exc.error.body())
            yield sse.DONE
            return
        finish = OPENAI_FINISH.get(generation.finish_reason or "", "stop")
        if body.include_usage:
            yield chunk("", finish)
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": generation.usage(),
                }
            )
        else:
            yield chunk("", finish, usage=generation.usage())
        yield sse.DONE
    finally:
        await generation.aclose(failed)
