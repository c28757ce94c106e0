"""Webhooks: the signing secret (shown when asked, rotated by admins) and the delivery log with
a resend button — the webhooks service called as /v1/webhooks does (api/webhooks/serving.py).
The log refreshes itself while a delivery is on its way."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from inferd.api.dash.render import Dash, blocking, fragment, view
from inferd.jobs.webhooks.outbox import ResendGone, Webhooks
from inferd.store.models import as_utc
from inferd.store.webhook_tables import WebhookDelivery

MOVING = ("queued", "pending")


def _webhooks(dash: Dash) -> Webhooks | None:
    return dash.gateway.webhooks


def _row(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        "model": row.model,
        "state": row.state,
        "attempts": row.attempts,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "last_latency_ms": row.last_latency_ms,
        "created_at": as_utc(row.created_at),
        "last_attempt_at": as_utc(row.last_attempt_at) if row.last_attempt_at else None,
        "resendable": row.state in ("delivered", "failed")
        and row.purged_at is None
        and row.result_key is not None,
        "resendable_until": as_utc(row.purge_at) if row.purge_at and not row.purged_at else None,
    }


async def _rows(dash: Dash, webhooks: Webhooks) -> list[dict[str, Any]]:
    rows = await blocking(webhooks.list, dash.session.account_id)
    return [_row(r) for r in rows]


async def _page(dash: Dash, status: int = 200, **values: Any) -> Response:
    webhooks = _webhooks(dash)
    if webhooks is None:
        return dash.page(
            "webhooks.html",
            status=404,
            title="Webhooks",
            error="Webhooks are not enabled on this server.",
            rows=[],
            enabled=False,
        )
    rows = await _rows(dash, webhooks)
    window_h = webhooks.secrets.rotation_window.total_seconds() / 3600
    return dash.page(
        "webhooks.html",
        status=status,
        title="Webhooks",
        rows=rows,
        moving=any(r["state"] in MOVING for r in rows),
        enabled=True,
        rotation_hours=f"{window_h:g}",
        resend_hours=f"{webhooks.resend_window.total_seconds() / 3600:g}",
        **values,
    )


@view
async def webhooks_page(dash: Dash) -> Response:
    return await _page(dash)


@view
async def table(dash: Dash) -> Response:
    webhooks = _webhooks(dash)
    rows = await _rows(dash, webhooks) if webhooks is not None else []
    return fragment(
        dash,
        "webhooks.html",
        "table",
        rows=rows,
        moving=any(r["state"] in MOVING for r in rows),
    )


@view
async def show_secret(dash: Dash) -> Response:
    await dash.form()
    webhooks = _webhooks(dash)
    if webhooks is None:
        return await _page(dash)
    secret = await blocking(webhooks.secrets.current, dash.session.account_id)
    return await _page(dash, secret=secret)


@view
async def rotate_secret(dash: Dash) -> Response:
    dash.require_admin("rotate the webhook signing secret")
    await dash.form()
    webhooks = _webhooks(dash)
    if webhooks is None:
        return await _page(dash)
    secret = await blocking(webhooks.secrets.rotate, dash.session.account_id)
    session = dash.session
    await blocking(
        dash.gateway.auth.teams.audit,
        session.account_id,
        dash.actor,
        "webhooks.secret_rotate",
        "webhooks",
    )
    return await _page(
        dash,
        secret=secret,
        notice="A new signing secret: the old one keeps signing deliveries beside it for "
        f"{webhooks.secrets.rotation_window.total_seconds() / 3600:g} h.",
    )


@view
async def resend(dash: Dash) -> Response:
    await dash.form()
    webhooks = _webhooks(dash)
    if webhooks is None:
        return await _page(dash)
    delivery_id = dash.request.path_params["delivery_id"]
    try:
        row = await blocking(webhooks.resend, dash.session.account_id, delivery_id)
    except ResendGone as exc:
        return await _page(dash, 410, error=str(exc))
    if row is None:
        return await _page(dash, 404, error=f"No delivery `{delivery_id[:60]}`.")
    return await _page(dash, notice=f"Delivery `{row.id}` is being sent again.")
