"""POST /v1/openai/completions (legacy completions): logprobs, echo, n, JSON modes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.gateway import Gateway
from inferd.api.generation import Generation, GenerationFailed, Run, merged, start_run
from inferd.api.openai.protocol import CompletionRequest
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse


def completion_logprobs(items: list[list], offset: int) -> dict[str, Any]:
    """OpenAI's legacy shape: parallel lists of tokens, logprobs, alternatives, offsets."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for item in items:
        _, text, logprob, _special = item[:4]
        tokens.append(text)
        token_logprobs.append(logprob)
        alternatives = item[4] if len(item) > 4 else None
        top.append({t: lp for _, t, lp in alternatives} if alternatives else None)
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


async def create_completion(gateway: Gateway, request: Request) -> Response:
    body = await gateway.read_json(request, CompletionRequest)
    request.scope.setdefault("state", {})["route"] = "completions"
    body.refuse_unsupported()
    params = body.sampling_params(gateway.settings.max_output_tokens)
    params["constraint"] = constraint_for(body.response_format)
    if body.logprobs is not None:
        params["top_logprobs"] = body.logprobs
        params["prompt_logprobs"] = body.echo
    payloads = []
    for i in range(body.n):
        seed = None if body.seed is None else body.seed + i
        payloads.append(
            {"kind": "generate", "prompt": body.prompt_text, "params": {**params, "seed": seed}}
        )
    admission = await gateway.admit(
        request,
        body.model,
        ("text-generation",),
        prompt_bound=body.prompt_bound(),
        max_output=(params["max_tokens"] or 0) * body.n or None,
    )
    run = await start_run(gateway, admission, request, payloads)
    completion_id = "cmpl-" + admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(run, body, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    results = await run.complete(request)
    choices = []
    for generation, items in zip(run.generations, results, strict=True):
        text = generation.text
        logprobs = None
        if body.echo:
            text = body.prompt_text + text
        if body.logprobs is not None:
            scored = (generation.prompt_items if body.echo else []) + items
            logprobs = completion_logprobs(scored, 0)
        choices.append(
            {
                "index": generation.index,
                "text": text,
                "finish_reason": generation.openai_finish,
                "logprobs": logprobs,
            }
        )
    return JSONResponse(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": admission.spec.name,
            "choices": choices,
            "usage": run.usage(),
        }
    )


async def _stream(
    run: Run, body: CompletionRequest, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = run.admission.spec.name

    def chunk(
        index: int, text: str, finish: str | None = None, logprobs: Any = None, **extra: Any
    ) -> bytes:
        return sse.frame(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
                ],
                **extra,
            }
        )

    failed: int | None = None
    offsets = {g.index: 0 for g in run.generations}
    echoed: set[int] = set()

    def echo(generation: Generation) -> bytes:
        # The scored prompt arrives just before the first tokens; echo it then.
        echoed.add(generation.index)
        scored = generation.prompt_items if body.logprobs is not None else None
        offsets[generation.index] = len(body.prompt_text)
        return chunk(
            generation.index,
            body.prompt_text,
            logprobs=completion_logprobs(scored, 0) if scored else None,
        )

    try:
        finished: list[Generation] = []
        try:
            async for generation, items in merged(run):
                if body.echo and generation.index not in echoed:
                    yield echo(generation)
                if items is None:
                    finished.append(generation)
                    continue
                text = "".join(item[1] for item in items)
                logprobs = None
                if body.logprobs is not None:
                    logprobs = completion_logprobs(items, offsets[generation.index])
                offsets[generation.index] += len(text)
                if text or logprobs:
                    yield chunk(generation.index, text, logprobs=logprobs)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(exc.error.body())
            yield sse.DONE
            return
        last = len(finished) - 1
        for n, generation in enumerate(finished):
            usage = {} if body.include_usage or n != last else {"usage": run.usage()}
            yield chunk(generation.index, "", generation.openai_finish, **usage)
        if body.include_usage:
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": run.usage(),
                }
            )
        yield sse.DONE
    finally:
        await run.aclose(failed)
