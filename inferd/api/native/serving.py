"""POST /v1/inference/{model}: the native request and response shapes, per task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.embeddings import run_embeddings
from inferd.api.gateway import Gateway
from inferd.api.generation import Generation, GenerationFailed, Run, start_run
from inferd.api.native.protocol import EmbeddingsRequest, TextGenerationRequest
from inferd.api.native.serving_tasks import infer_task
from inferd.api.native.task_protocol import TASKS
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse

# Engine finish reasons → TGI's.
NATIVE_FINISH = {"eos": "eos_token", "stop_sequence": "stop_sequence", "length": "length"}


async def infer(gateway: Gateway, request: Request, model: str) -> Response:
    data = await gateway.read_fields(request)
    spec = gateway.catalog.find(model)
    if spec is not None and spec.task in TASKS:
        return await infer_task(gateway, request, spec, data)
    if spec is not None and spec.task == "embeddings":
        request.scope.setdefault("state", {})["route"] = "native_embeddings"
        req = gateway.validate(EmbeddingsRequest, data)
        bound = sum(len(t.encode()) + 2 for t in req.inputs)
        admission = await gateway.admit(request, model, ("embeddings",), prompt_bound=bound)
        return await _embeddings(gateway, request, admission, req)
    request.scope.setdefault("state", {})["route"] = "native_text_generation"
    gen_req = gateway.validate(TextGenerationRequest, data)
    admission = await gateway.admit(
        request,
        model,
        ("text-generation",),
        prompt_bound=len(gen_req.input.encode()) + 16,
        max_output=gen_req.max_new_tokens or gateway.settings.default_native_max_new_tokens,
    )
    return await _text_generation(gateway, request, admission, gen_req)


def _status(run: Run) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "runtime_ms": run.admission.runtime_ms,
        "cost": run.cost,
        "tokens_input": run.prompt_tokens,
        "tokens_generated": run.completion_tokens,
    }


def _details(generation: Generation, items: list[list] | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": NATIVE_FINISH.get(generation.finish_reason or "", "length"),
        "generated_tokens": generation.completion_tokens,
        "input_tokens": generation.prompt_tokens,
        "seed": None,
    }
    if items is not None:
        details["tokens"] = [_token(item) for item in items]
    return details


def _token(item: list) -> dict[str, Any]:
    token = {"id": item[0], "text": item[1], "logprob": item[2], "special": item[3]}
    if len(item) > 4:
        token["top_tokens"] = [{"id": i, "text": t, "logprob": lp} for i, t, lp in item[4]]
    return token


async def _text_generation(gateway, request, admission, body: TextGenerationRequest) -> Response:
    params = {
        "max_tokens": body.max_new_tokens,
        "default_max_tokens": gateway.settings.default_native_max_new_tokens,
        "max_output_tokens": gateway.settings.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repetition_penalty": body.repetition_penalty,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "stop": body.stop,
        "seed": body.seed,
        "ignore_eos": body.ignore_eos,
        "top_logprobs": body.top_logprobs,
        "constraint": constraint_for(body.response_format),
    }
    run = await start_run(
        gateway, admission, request, [{"kind": "generate", "prompt": body.input, "params": params}]
    )
    if body.stream:
        return StreamingResponse(_stream(run), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    [items] = await run.complete(request)
    generation = run.generations[0]
    response = {
        "request_id": admission.request_id,
        "inference_status": _status(run),
        "results": [{"generated_text": generation.text}],
        "num_tokens": run.completion_tokens,
        "num_input_tokens": run.prompt_tokens,
    }
    if body.details:
        response["details"] = _details(generation, items)
    return JSONResponse(response)


def _token_event(item: list) -> dict[str, Any]:
    return {"token": _token(item), "generated_text": None, "details": None}


async def _stream(run: Run) -> AsyncIterator[bytes]:
    """TGI-style: one event per token; the last one carries generated_text and details."""
    generation = run.generations[0]
    held: list | None = None
    failed: int | None = None
    try:
        try:
            async for items in generation.items():
                for item in items:
                    if held is not None:
                        yield sse.frame(_token_event(held))
                    held = item
        except GenerationFailed as exc:
            failed = exc.error.status
            if held is not None:
                yield sse.frame(_token_event(held))
            yield sse.frame(exc.error.body())
            return
        if held is None:
            last = generation.last_token or [None, 0.0]
            held = [last[0], "", last[1], False]
        final = _token_event(held)
        final["generated_text"] = generation.text
        final["details"] = _details(generation, None)
        final["inference_status"] = _status(run)
        final["request_id"] = run.admission.request_id
        yield sse.frame(final)
    finally:
        await run.aclose(failed)


async def _embeddings(gateway, request, admission, body: EmbeddingsRequest) -> Response:
    result = await run_embeddings(gateway, admission, request, body.inputs, body.normalize)
    return JSONResponse(
        {
            "request_id": admission.request_id,
            "embeddings": result.vectors,
            "input_tokens": result.tokens,
            "inference_status": {
                "status": "succeeded",
                "runtime_ms": admission.runtime_ms,
                "cost": result.cost,
                "tokens_input": result.tokens,
            },
        }
    )
