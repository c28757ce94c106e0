"""POST /v1/openai/embeddings."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.openai import serving_routed as routed
from inferd.api.openai.protocol import EmbeddingRequest
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.catalog import ModelSpec, Route
from inferd.requests import Embed
from inferd.serving import RequestMeta
from inferd.serving.embeddings import EmbeddingsResult


async def create_embeddings(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "embeddings")
    principal = await gateway.principal(request)
    data = await gateway.read_object(request)
    body = gateway.validate(EmbeddingRequest, data)
    found = gateway.serving.lookup(principal, body.model, "embeddings")
    if isinstance(found, Route):

        async def start_local(spec: ModelSpec) -> EmbeddingsResult:
            return await embed(gateway, request, principal, spec, body, meta)

        async def render_local(result: EmbeddingsResult) -> Response:
            return render_embeddings(body, result)

        return await routed.serve_route(
            gateway,
            principal,
            found,
            meta,
            routed.EMBEDDINGS,
            data,
            stream=False,
            include_usage=False,
            max_output=0,
            start_local=start_local,
            render_local=render_local,
        )
    return render_embeddings(body, await embed(gateway, request, principal, found, body, meta))


async def embed(
    gateway: Gateway,
    request: Request,
    principal: Principal,
    spec: ModelSpec,
    body: EmbeddingRequest,
    meta: RequestMeta,
) -> EmbeddingsResult:
    texts = body.texts()
    return await unless_disconnected(
        request, gateway.serving.embed(principal, spec, Embed(texts=texts), meta)
    )


def render_embeddings(body: EmbeddingRequest, result: EmbeddingsResult) -> Response:
    vectors = result.vectors
    dims = vectors.shape[1]
    if body.dimensions is not None and body.dimensions != dims:
        raise APIError(
            400,
            f"This model returns {dims} dimensions; `dimensions` cannot change it.",
            param="dimensions",
            code="unsupported_parameter",
        )
    if body.encoding_format == "base64":
        # Little-endian float32, as OpenAI's clients decode it.
        data = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
    else:
        data = list(vectors)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(data)
            ],
            "model": result.admission.model_name,
            "usage": {
                "prompt_tokens": result.tokens,
                "total_tokens": result.tokens,
                "estimated_cost": result.cost,
            },
        }
    )
