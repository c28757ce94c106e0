"""How a batch's lines are checked and run: through the OpenAI routes' own code (wire models,
handlers), as the batch's creator, replayed like an HTTP call (api/replay.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.api.openai.serving_chat import create_chat_completion
from inferd.api.openai.serving_completions import create_completion
from inferd.api.openai.serving_embeddings import create_embeddings
from inferd.api.replay import current_principal, principal_from, replay
from inferd.jobs.batch.service import LineResult
from inferd.serving import RequestError

Handler = Callable[[Gateway, Request], Awaitable[Response]]

# A batch's endpoint → the wire model of its bodies, the task its model must serve, the
# handler that answers it and the route it is replayed on.
ENDPOINTS: dict[str, tuple[type[BaseModel], str, Handler, str]] = {
    "/v1/chat/completions": (
        ChatCompletionRequest,
        "text-generation",
        create_chat_completion,
        "/v1/openai/chat/completions",
    ),
    "/v1/completions": (
        CompletionRequest,
        "text-generation",
        create_completion,
        "/v1/openai/completions",
    ),
    "/v1/embeddings": (
        EmbeddingRequest,
        "embeddings",
        create_embeddings,
        "/v1/openai/embeddings",
    ),
}


class BatchLines:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def check_body(self, endpoint: str, body: dict[str, Any]) -> str | None:
        model_type = ENDPOINTS[endpoint][0]
        if body.get("stream"):
            return "`stream` is not supported in a batch: each output line is the whole answer."
        try:
            self.gateway.validate(model_type, body)
        except APIError as exc:
            return exc.message
        return None

    async def check_model(self, principal: dict[str, Any], endpoint: str, model: str) -> str | None:
        task = ENDPOINTS[endpoint][1]
        try:
            # A route is fine: lines replay the OpenAI endpoints, which serve routes.
            self.gateway.serving.lookup(principal_from(principal), model, task)
        except RequestError as exc:
            return exc.message
        return None

    async def run(
        self,
        principal: dict[str, Any],
        endpoint: str,
        body: dict[str, Any],
        request_id: str,
        price_factor: float,
    ) -> LineResult:
        _, _, handler, path = ENDPOINTS[endpoint]
        gateway = self.gateway
        response = await replay(
            lambda request: handler(gateway, request),
            path,
            "application/json",
            orjson.dumps(body),
            await current_principal(gateway, principal),
            request_id,
            price_factor=price_factor,
            background=True,
        )
        # Billed before the line is marked done: a rerun after a crash bills nothing more.
        if not await gateway.ledger.flush():
            raise RuntimeError("usage not written")
        raw = getattr(response, "body", b"")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": {"message": "The response was not JSON.", "code": "internal_error"}}
        return LineResult(response.status_code, request_id, answer)
