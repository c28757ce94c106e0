"""One embeddings request seen from the API: shared by OpenAI and native routes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from inferd import metrics
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError, from_engine_event
from inferd.api.gateway import Admission, Gateway
from inferd.billing.pricing import token_cost


@dataclass
class EmbeddingsResult:
    vectors: list[list[float]]
    tokens: int
    cost: float


async def run_embeddings(
    gateway: Gateway, admission: Admission, request: Request, texts: list[str], normalize: bool
) -> EmbeddingsResult:
    status, tokens, cost = 500, 0, 0.0
    try:
        call = await gateway.submit(
            admission, {"kind": "embed", "texts": texts, "normalize": normalize}
        )
        try:
            event = await unless_disconnected(request, call.result())
        finally:
            call.close()
        if event["ev"] == "error":
            error = from_engine_event(event)
            status = error.status
            raise error
        if event["ev"] != "result":
            raise APIError(500, "The model answered out of order.", code="protocol_error")
        status, tokens = 200, int(event["tokens"])
        cost = token_cost(admission.spec.price, tokens, 0)
    except APIError as exc:
        status = exc.status
        raise
    finally:
        await admission.finish(status, tokens, 0, cost)
    metrics.TOKENS.labels(admission.spec.name, "input").inc(tokens)
    request.scope["state"].update(request_id=admission.request_id, prompt_tokens=tokens, cost=cost)
    return EmbeddingsResult(event["embeddings"], tokens, cost)
