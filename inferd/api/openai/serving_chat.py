"""POST /v1/openai/chat/completions."""

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
from inferd.api.openai.protocol import ChatCompletionRequest
from inferd.api.responses import JSONResponse


def _logprob_entries(items: list[list]) -> list[dict[str, Any]]:
    return [
        {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8")), "top_logprobs": []}
        for _, text, lp, special in items
        if not special
    ]


async def create_chat_completion(gateway: Gateway, request: Request) -> Response:
    body = await gateway.read_json(request, ChatCompletionRequest)
    request.scope.setdefault("state", {})["route"] = "chat"
    body.refuse_unsupported()
    params = body.sampling_params(gateway.settings.max_output_tokens)
    if body.max_completion_tokens and not body.max_tokens:
        params["max_tokens"] = body.max_completion_tokens
    messages = [
        {
            k: v
            for k, v in (("role", m.role), ("content", m.text()), ("name", m.name))
            if v is not None
        }
        for m in body.messages
    ]
    admission = await gateway.admit(
        request,
        body.model,
        ("text-generation",),
        prompt_bound=body.prompt_bound(),
        max_output=params["max_tokens"],
    )
    generation = await start_generation(
        gateway, admission, request, {"kind": "generate", "messages": messages, "params": params}
    )
    completion_id = "chatcmpl-" + admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(generation, body, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    try:
        items = await unless_disconnected(request, generation.collect())
    except GenerationFailed as exc:
        await generation.aclose(exc.error.status)
        return exc.error.response()
    except BaseException:
        await generation.aclose(499)
        raise
    await generation.aclose()
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": generation.text},
        "finish_reason": OPENAI_FINISH.get(generation.finish_reason or "", "stop"),
        "logprobs": {"content": _logprob_entries(items)} if body.logprobs else None,
    }
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": admission.spec.name,
            "choices": [choice],
            "usage": generation.usage(),
        }
    )


async def _stream(
    generation: Generation, body: ChatCompletionRequest, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = generation.admission.spec.name

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if "logprobs" in extra:
            choice["logprobs"] = extra.pop("logprobs")
        return sse.frame(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }
        )

    failed: int | None = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for items in generation.items():
                text = "".join(item[1] for item in items)
                if not text:
                    continue
                extra = {"logprobs": {"content": _logprob_entries(items)}} if body.logprobs else {}
                yield chunk({"content": text}, **extra)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(exc.error.body())
            yield sse.DONE
            return
        finish = OPENAI_FINISH.get(generation.finish_reason or "", "stop")
        if body.include_usage:
            # OpenAI: usage arrives on one extra chunk with empty choices.
            yield chunk({}, finish)
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": generation.usage(),
                }
            )
        else:
            yield chunk({}, finish, usage=generation.usage())
        yield sse.DONE
    finally:
        await generation.aclose(failed)
