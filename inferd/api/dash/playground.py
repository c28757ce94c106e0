"""The playground: chat with a text-generation model (a built-in or the team's own deployment)
from the browser. The reply streams as the OpenAI chat route streams it (the same request
building and chunk stream, api/openai/serving_chat.py), through the serving core as the
session's principal, so limits, the budget and the usage ledger apply as to an API call.
A refusal (402, 429, a stopped deployment) is an error chunk, never an HTTP error."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.dash.deployments import invalid
from inferd.api.dash.render import Dash, view
from inferd.api.errors import APIError, error_body
from inferd.api.openai.protocol import ChatCompletionRequest
from inferd.api.openai.serving_chat import generate_requests, stream_chunks
from inferd.api.openai.tools import plan_tools
from inferd.serving.errors import RequestError

TASK = "text-generation"
DEFAULT_MAX_TOKENS = 256


def models(dash: Dash) -> list[dict[str, Any]]:
    """The text-generation models this session may use: built-ins, then its deployments."""
    catalog = dash.gateway.catalog
    found = []
    for spec in catalog.visible(dash.session.account_id):
        if spec.task != TASK or not dash.principal.allows(spec.name):
            continue
        if spec.deprecated_at is not None and catalog.find(spec.name) is not spec:
            continue  # past its sunset: served as its replacement, listed as that
        deployed = catalog.deployed(spec.key) if spec.deploy_id else None
        found.append(
            {
                "name": spec.name,
                "status": deployed.status if deployed else None,
                "deployed": spec.deploy_id is not None,
            }
        )
    return found


@view
async def playground(dash: Dash) -> Response:
    return dash.page(
        "playground.html",
        title="Playground",
        models=models(dash),
        chosen=dash.request.query_params.get("model"),
        max_tokens=min(DEFAULT_MAX_TOKENS, dash.gateway.settings.max_output_tokens),
        limit=dash.gateway.settings.max_output_tokens,
    )


@view
async def chat(dash: Dash) -> Response:
    form = await dash.form()
    gateway = dash.gateway
    try:
        body = ChatCompletionRequest.model_validate(
            {
                "model": form.get("model", ""),
                "messages": [{"role": "user", "content": form.get("prompt", "")}],
                "max_tokens": form.get("max_tokens") or None,
                "stream": True,
            }
        )
    except ValidationError as exc:
        return _refused(APIError(400, invalid(exc), code="invalid_parameter"))
    try:
        if not body.messages[0].text().strip():
            raise APIError(400, "Write a prompt first.", code="invalid_parameter", param="prompt")
        spec = gateway.serving.resolve(dash.principal, body.model, TASK)
        plan = plan_tools(None, None)
        requests = generate_requests(gateway, body, plan, [])
        run = await gateway.serving.generate(
            dash.principal, spec, requests, gateway.meta(dash.request, "chat")
        )
    except RequestError as exc:
        return _refused(exc)
    completion_id = "chatcmpl-" + run.admission.request_id
    return StreamingResponse(
        stream_chunks(run, body, plan, completion_id, int(time.time())),
        media_type=sse.MEDIA_TYPE,
        headers=sse.HEADERS,
    )


def _refused(exc: RequestError) -> Response:
    """A request the serving path refused, as the one chunk of a stream (what the page
    shows), so the browser never sees an HTTP error for it."""

    async def chunks() -> AsyncIterator[bytes]:
        yield sse.frame(error_body(exc))
        yield sse.DONE

    return StreamingResponse(chunks(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
