"""The overview and the usage page: cost and requests by day, model and key, and GPU-hours of
deployments and containers. Read from the usage ledger's summary (daily rollups), never by
scanning requests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.responses import Response

from inferd.api.dash.render import Dash, blocking, view

DAYS = 30


def _days(rows: list[dict[str, Any]], since: date) -> list[dict[str, Any]]:
    """One entry per day since `since`, zero where nothing happened."""
    by_day: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = by_day.setdefault(row["date"], {"cost": 0.0, "requests": 0})
        day["cost"] += row["cost"]
        day["requests"] += row["requests"]
    days = []
    for offset in range(DAYS):
        day = (since + timedelta(days=offset)).isoformat()
        days.append({"date": day, **by_day.get(day, {"cost": 0.0, "requests": 0})})
    return days


def _by_model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for row in rows:
        m = models.setdefault(
            row["model"],
            {"model": row["model"], "requests": 0, "tokens": 0, "cost": 0.0, "gpu_hours": 0.0},
        )
        m["requests"] += row["requests"]
        m["tokens"] += row["prompt_tokens"] + row["completion_tokens"]
        m["cost"] += row["cost"]
        m["gpu_hours"] += row["uptime_seconds"] / 3600
    return sorted(models.values(), key=lambda m: -m["cost"])


def chart(days: list[dict[str, Any]], field: str) -> dict[str, Any]:
    """Bars of `field` per day, scaled to the largest, for an inline SVG."""
    top = max((d[field] for d in days), default=0) or 1
    width = 100 / max(len(days), 1)
    bars = [
        {
            "x": i * width,
            "w": width * 0.8,
            "h": 180 * d[field] / top,
            "label": d["date"],
            "value": d[field],
        }
        for i, d in enumerate(days)
    ]
    return {"bars": bars, "top": top}


async def _summary(dash: Dash, key_name: str | None = None) -> list[dict[str, Any]]:
    since = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    return await blocking(
        dash.gateway.ledger.summary, dash.session.account_id, start, None, None, key_name
    )


@view
async def overview(dash: Dash) -> Response:
    rows = await _summary(dash)
    since = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    days = _days(rows, since)
    totals = {
        "cost": sum(d["cost"] for d in days),
        "requests": sum(d["requests"] for d in days),
        "gpu_hours": sum(r["uptime_seconds"] for r in rows) / 3600,
    }
    return dash.page(
        "overview.html", title="Overview", totals=totals, cost=chart(days, "cost"), days=DAYS
    )


@view
async def usage(dash: Dash) -> Response:
    rows = await _summary(dash)
    since = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    days = _days(rows, since)
    keys = await blocking(dash.gateway.auth.accounts.list_keys, dash.session.account_id)
    by_key = []
    for key in keys:
        if key.alias_of:
            continue
        mine = await _summary(dash, key.name)
        by_key.append(
            {
                "key": key.name,
                "requests": sum(r["requests"] for r in mine),
                "cost": sum(r["cost"] for r in mine),
            }
        )
    return dash.page(
        "usage.html",
        title="Usage",
        days=days,
        cost=chart(days, "cost"),
        requests=chart(days, "requests"),
        models=_by_model(rows),
        by_key=by_key,
        window=DAYS,
    )
