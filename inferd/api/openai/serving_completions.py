"""POST /v1/openai/completions (legacy completions): logprobs, echo, n, JSON modes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import error_body
from inferd.api.gateway import Gateway
from inferd.api.openai import serving_routed as routed
from inferd.api.openai.protocol import CompletionRequest
from inferd.api.openai.serving_chat import openai_finish, usage
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.catalog import ModelSpec, Route
from inferd.requests import Generate, Token
from inferd.serving import RequestMeta
from inferd.serving.generation import Generation, GenerationFailed, Run, merged


def completion_logprobs(items: list[Token], offset: int) -> dict[str, Any]:
    """OpenAI's legacy shape: parallel lists of tokens, logprobs, alternatives, offsets."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for item in items:
        tokens.append(item.text)
        token_logprobs.append(item.logprob)
        top.append({t.text: t.logprob for t in item.top} if item.top else None)
        offsets.append(offset)
        offset += len(item.text)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


async def create_completion(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "completions")
    principal = await gateway.principal(request)
    data = await gateway.read_object(request)
    body = gateway.validate(CompletionRequest, data)
    body.refuse_unsupported()
    found = gateway.serving.lookup(principal, body.model, "text-generation")
    if isinstance(found, Route):

        async def start_local(spec: ModelSpec) -> Run:
            return await start_completion(gateway, principal, spec, body, meta)

        async def render_local(run: Run) -> Response:
            return await render_completion(request, run, body)

        return await routed.serve_route(
            gateway,
            principal,
            found,
            meta,
            routed.COMPLETIONS,
            data,
            stream=body.stream,
            include_usage=body.include_usage,
            max_output=body.max_tokens * body.n if body.max_tokens else None,
            start_local=start_local,
            render_local=render_local,
        )
    run = await start_completion(gateway, principal, found, body, meta)
    return await render_completion(request, run, body)


async def start_completion(
    gateway: Gateway,
    principal: Principal,
    spec: ModelSpec,
    body: CompletionRequest,
    meta: RequestMeta,
) -> Run:
    params = body.sampling_params(gateway.settings.max_output_tokens)
    params.constraint = constraint_for(body.response_format)
    if body.logprobs is not None:
        params.logprobs = True
        params.top_logprobs = body.logprobs
        params.prompt_logprobs = body.echo
    requests = [
        Generate(
            params=msgspec.structs.replace(
                params, seed=None if body.seed is None else body.seed + i
            ),
            prompt=body.prompt_text,
        )
        for i in range(body.n)
    ]
    return await gateway.serving.generate(principal, spec, requests, meta)


async def render_completion(request: Request, run: Run, body: CompletionRequest) -> Response:
    completion_id = "cmpl-" + run.admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(run, body, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    results = await unless_disconnected(request, run.complete())
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
                "finish_reason": openai_finish(generation),
                "logprobs": logprobs,
            }
        )
    return JSONResponse(
        {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": run.admission.model_name,
            "choices": choices,
            "usage": usage(run),
        }
    )


async def _stream(
    run: Run, body: CompletionRequest, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = run.admission.model_name

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
                text = "".join(item.text for item in items)
                logprobs = None
                if body.logprobs is not None:
                    logprobs = completion_logprobs(items, offsets[generation.index])
                offsets[generation.index] += len(text)
                if text or logprobs:
                    yield chunk(generation.index, text, logprobs=logprobs)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(error_body(exc.error))
            yield sse.DONE
            return
        last = len(finished) - 1
        for n, generation in enumerate(finished):
            extra = {} if body.include_usage or n != last else {"usage": usage(run)}
            yield chunk(generation.index, "", openai_finish(generation), **extra)
        if body.include_usage:
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage(run),
                }
            )
        yield sse.DONE
    finally:
        await run.aclose(failed)
