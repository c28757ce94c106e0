"""Native requests answered by webhook: accepted at once, run later by a job through exactly the
code an HTTP call runs, the JSON body it would have answered delivered to the URL.

At submit the request is checked as far as it can be without running it (the caller, the model,
the URL); the job then replays the stored body as an ASGI request whose scope carries the
caller as authenticated at submit and the request id the client was given.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.replay import current_principal, replay
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.jobs.runner import RetryLater
from inferd.jobs.webhooks.delivery import URLRejected
from inferd.jobs.webhooks.outbox import Envelope, QueueFull
from inferd.serving import RequestMeta
from inferd.serving.admission import new_request_id

REPLAY = "webhook_replay"
BUSY_RETRY_S = 2.0  # scope state flag: this request is a webhook job's replay

Infer = Callable[[Gateway, Request, str], Awaitable[Response]]


async def submit_webhook(
    gateway: Gateway,
    principal: Principal,
    model: str,
    data: dict[str, Any],
    content_type: str,
    body: bytes,
    meta: RequestMeta,
) -> Response:
    webhooks = gateway.webhooks
    if webhooks is None:
        raise APIError(400, "This server does not answer by webhook.", param="webhook")
    url = data["webhook"]
    if not isinstance(url, str):
        raise APIError(400, "`webhook` must be a URL.", param="webhook")
    if str(data.get("stream", "")).lower() in ("true", "1"):
        raise APIError(
            400,
            "`webhook` and `stream: true` cannot be combined: a webhook gets the whole result.",
            param="webhook",
            code="invalid_parameter",
        )
    try:
        await webhooks.check_url(url)
    except URLRejected as exc:
        raise APIError(400, f"`webhook`: {exc.reason}.", param="webhook", code=exc.code) from None
    await gateway.serving.check_budget(principal)
    request_id = new_request_id()
    meta.request_id = request_id
    envelope = Envelope(request_id, model, content_type, body, asdict(principal))
    try:
        await webhooks.submit(principal.account_id, url, envelope)
    except QueueFull as exc:
        raise APIError(429, str(exc), code="webhook_queue_full") from None
    return JSONResponse({"request_id": request_id, "inference_status": {"status": "queued"}})


async def execute(gateway: Gateway, infer: Infer, envelope: Envelope) -> bytes:
    """Run a stored webhook request as its HTTP call; the JSON body to deliver."""
    response = await replay(
        lambda request: infer(gateway, request, envelope.model),
        f"/v1/inference/{envelope.model}",
        envelope.content_type,
        envelope.body,
        await current_principal(gateway, envelope.principal),
        envelope.request_id,
    )
    # Billed before the job is done: a crash after this point reruns nothing that bills.
    if not await gateway.ledger.flush():
        raise RuntimeError("usage not written")  # the job retries; the row is kept
    if response.status_code in (429, 503):
        # The account's concurrency limit is full, or a model is starting: wait, don't fail.
        raise RetryLater(timedelta(seconds=BUSY_RETRY_S), f"status {response.status_code}")
    body = getattr(response, "body", b"")
    if response.status_code == 200 and body:
        return bytes(body)
    error = json.loads(body).get("error") if body else None
    return json.dumps(
        {
            "request_id": envelope.request_id,
            "inference_status": {"status": "failed", "runtime_ms": 0, "cost": 0.0},
            "error": error or {"message": "The request failed.", "code": "failed"},
        }
    ).encode()
