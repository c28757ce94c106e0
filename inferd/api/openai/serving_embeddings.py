"""POST /v1/openai/embeddings."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.embeddings import run_embeddings
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.openai.protocol import EmbeddingRequest
from inferd.api.responses import JSONResponse


async def create_embeddings(gateway: Gateway, request: Request) -> Response:
    body = await gateway.read_json(request, EmbeddingRequest)
    request.scope.setdefault("state", {})["route"] = "embeddings"
    texts = body.texts()
    admission = await gateway.admit(
        request, body.model, ("embeddings",), prompt_bound=sum(len(t.encode()) + 2 for t in texts)
    )
    result = await run_embeddings(gateway, admission, request, texts, normalize=False)
    dims = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is not None and body.dimensions != dims:
        raise APIError(
            400,
            f"This model returns {dims} dimensions; `dimensions` cannot change it.",
            param="dimensions",
            code="unsupported_parameter",
        )
    if body.encoding_format == "base64":
        data = [
            base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
            for v in result.vectors
        ]
    else:
        data = result.vectors
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(data)
            ],
            "model": admission.spec.name,
            "usage": {
                "prompt_tokens": result.tokens,
                "total_tokens": result.tokens,
                "estimated_cost": result.cost,
            },
        }
    )
