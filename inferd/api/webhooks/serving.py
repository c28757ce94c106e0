"""Handlers: /v1/webhooks/secret (read, rotate), /v1/webhooks/deliveries (list, resend)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.api.teams.serving import actor
from inferd.auth import Principal
from inferd.jobs.webhooks.outbox import ResendGone, Webhooks
from inferd.store.models import as_utc
from inferd.store.webhook_tables import WebhookDelivery


def _webhooks(request: Request) -> tuple[Gateway, Webhooks]:
    gateway: Gateway = request.app.state.gateway
    if gateway.webhooks is None:
        raise APIError(404, "Webhooks are not enabled on this server.", code="not_found")
    return gateway, gateway.webhooks


async def _key_holder(request: Request) -> tuple[Principal, Webhooks]:
    """The secret signs what receivers trust: an API key's business, never a scoped JWT's."""
    gateway, webhooks = _webhooks(request)
    refusal = "Scoped JWTs cannot read or rotate the webhook secret."
    return await gateway.key_holder(request, refusal), webhooks


async def get_secret(request: Request) -> Response:
    principal, webhooks = await _key_holder(request)
    secret = await asyncio.to_thread(webhooks.secrets.current, principal.account_id)
    return JSONResponse({"secret": secret})


async def rotate_secret(request: Request) -> Response:
    principal, webhooks = await _key_holder(request)
    if principal.role != "admin":  # it breaks every receiver's verification: an admin's call
        raise APIError(403, "Only a team admin may rotate the webhook secret.", code="forbidden")
    secret = await asyncio.to_thread(webhooks.secrets.rotate, principal.account_id)
    gateway: Gateway = request.app.state.gateway
    who = await actor(gateway, principal)
    await asyncio.to_thread(
        gateway.auth.teams.audit, principal.account_id, who, "webhooks.secret_rotate", "webhooks"
    )
    return JSONResponse({"secret": secret})


async def list_deliveries(request: Request) -> Response:
    principal, webhooks = await _key_holder(request)
    rows = await asyncio.to_thread(webhooks.list, principal.account_id)
    return JSONResponse({"data": [_delivery(row, webhooks) for row in rows]})


async def resend(request: Request) -> Response:
    principal, webhooks = await _key_holder(request)
    delivery_id = request.path_params["delivery_id"]
    try:
        row = await asyncio.to_thread(webhooks.resend, principal.account_id, delivery_id)
    except ResendGone as exc:
        raise APIError(410, str(exc), code="resend_window_over") from None
    if row is None:
        raise APIError(404, f"No delivery `{delivery_id}`.", code="not_found")
    return JSONResponse(_delivery(row, webhooks))


def _delivery(row: WebhookDelivery, webhooks: Webhooks) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        "model": row.model,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "last_latency_ms": row.last_latency_ms,
        "next_attempt_at": _iso(row.next_attempt_at),
        "created_at": _iso(row.created_at),
        "last_attempt_at": _iso(row.last_attempt_at),
        "delivered_at": _iso(row.delivered_at),
        "resendable_until": None if row.purged_at else _iso(row.purge_at),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()
