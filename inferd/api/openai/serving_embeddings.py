"""POST /v1/openai/embeddings."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.openai.protocol import EmbeddingRequest
from inferd.api.responses import JSONResponse
from inferd.requests import Embed


async def create_embeddings(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "embeddings")
    principal = await gateway.principal(request)
    body = await gateway.read_json(request, EmbeddingRequest)
    texts = body.texts()
    result = await unless_disconnected(
        request, gateway.serving.embed(principal, body.model, Embed(texts=texts), meta)
    )
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
            "model": result.admission.spec.name,
            "usage": {
                "prompt_tokens": result.tokens,
                "total_tokens": result.tokens,
                "estimated_cost": result.cost,
            },
        }
    )
