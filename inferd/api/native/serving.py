"""POST /v1/inference/{model}: the native request and response shapes, per task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import error_body
from inferd.api.gateway import Gateway
from inferd.api.native.protocol import EmbeddingsRequest, TextGenerationRequest
from inferd.api.native.serving_tasks import infer_task
from inferd.api.native.task_protocol import TASKS
from inferd.api.replay import is_replay
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse
from inferd.api.webhooks.inference import submit_webhook
from inferd.auth import Principal
from inferd.catalog import ModelSpec
from inferd.requests import Embed, Generate, SamplingParams, Token
from inferd.serving import RequestMeta
from inferd.serving.generation import Generation, GenerationFailed, Run

# Engine finish reasons → TGI's.
NATIVE_FINISH = {"eos": "eos_token", "stop_sequence": "stop_sequence", "length": "length"}


async def infer(gateway: Gateway, request: Request, model: str) -> Response:
    meta = gateway.meta(request, "native")
    principal = await gateway.principal(request)
    content_type = gateway.content_type(request)
    body = await gateway.read_body(request)
    data = gateway.fields(content_type, body)
    spec = gateway.serving.resolve(principal, model, None)
    meta.route = "native_" + spec.task.replace("-", "_")
    if data.get("webhook") is not None and not is_replay(request):
        return await submit_webhook(gateway, principal, model, data, content_type, body, meta)
    if spec.task in TASKS:
        return await infer_task(gateway, request, principal, spec, data, meta)
    if spec.task == "embeddings":
        body = gateway.validate(EmbeddingsRequest, data)
        return await _embeddings(gateway, request, principal, spec, body, meta)
    gen_req = gateway.validate(TextGenerationRequest, data)
    return await _text_generation(gateway, request, principal, spec, gen_req, meta)


def _status(run: Run) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "runtime_ms": run.admission.runtime_ms,
        "cost": run.cost,
        "tokens_input": run.prompt_tokens,
        "tokens_generated": run.completion_tokens,
    }


def _details(generation: Generation, items: list[Token] | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": NATIVE_FINISH.get(generation.finish_reason or "", "length"),
        "generated_tokens": generation.completion_tokens,
        "input_tokens": generation.prompt_tokens,
        "seed": None,
    }
    if items is not None:
        details["tokens"] = [_token(item) for item in items]
    return details


def _token(item: Token) -> dict[str, Any]:
    token: dict[str, Any] = {
        "id": item.id,
        "text": item.text,
        "logprob": item.logprob,
        "special": item.special,
    }
    if item.top is not None:
        token["top_tokens"] = [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in item.top]
    return token


def generate_request(gateway: Gateway, body: TextGenerationRequest) -> Generate:
    settings = gateway.settings
    params = SamplingParams(
        max_tokens=body.max_new_tokens,
        default_max_tokens=settings.default_native_max_new_tokens,
        max_output_tokens=settings.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        stop=body.stop or [],
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        logprobs=body.details or body.top_logprobs > 0,
        top_logprobs=body.top_logprobs,
        constraint=constraint_for(body.response_format),
    )
    return Generate(params=params, prompt=body.input)


async def _text_generation(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    spec: ModelSpec,
    body: TextGenerationRequest,
    meta: RequestMeta,
) -> Response:
    generate = generate_request(gateway, body)
    run = await gateway.serving.generate(principal, spec, [generate], meta)
    if body.stream:
        return StreamingResponse(_stream(run), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    [items] = await unless_disconnected(request, run.complete())
    generation = run.generations[0]
    response = {
        "request_id": run.admission.request_id,
        "inference_status": _status(run),
        "results": [{"generated_text": generation.text}],
        "num_tokens": run.completion_tokens,
        "num_input_tokens": run.prompt_tokens,
    }
    if body.details:
        response["details"] = _details(generation, items)
    return JSONResponse(response)


def _token_event(item: Token) -> dict[str, Any]:
    return {"token": _token(item), "generated_text": None, "details": None}


async def _stream(run: Run) -> AsyncIterator[bytes]:
    """TGI-style: one event per token; the last one carries generated_text and details."""
    generation = run.generations[0]
    held: Token | None = None
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
            yield sse.frame(error_body(exc.error))
            return
        if held is None:
            last = generation.last_token
            held = Token(last.id if last else 0, "", last.logprob if last else 0.0, False)
        final = _token_event(held)
        final["generated_text"] = generation.text
        final["details"] = _details(generation, None)
        final["inference_status"] = _status(run)
        final["request_id"] = run.admission.request_id
        yield sse.frame(final)
    finally:
        await run.aclose(failed)


async def _embeddings(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    spec: ModelSpec,
    body: EmbeddingsRequest,
    meta: RequestMeta,
) -> Response:
    result = await unless_disconnected(
        request,
        gateway.serving.embed(
            principal, spec, Embed(texts=body.inputs, normalize=body.normalize), meta
        ),
    )
    return JSONResponse(
        {
            "request_id": result.admission.request_id,
            "embeddings": result.vectors,
            "input_tokens": result.tokens,
            "inference_status": {
                "status": "succeeded",
                "runtime_ms": result.admission.runtime_ms,
                "cost": result.cost,
                "tokens_input": result.tokens,
            },
        }
    )
