"""Team (members and roles; the audit log for admins), billing (admins only) and the account's
limits, as /v1/team, /v1/billing and /v1/me do them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from inferd.api.dash.render import Dash, Refused, blocking, view
from inferd.auth.teams import TeamError


async def _team_page(dash: Dash, **values) -> Response:
    teams = dash.gateway.auth.teams
    members = await blocking(teams.members, dash.session.account_id)
    audit = await blocking(teams.audit_log, dash.session.account_id) if dash.is_admin else []
    return dash.page("team.html", title="Team", members=members, audit=audit, **values)


@view
async def team(dash: Dash) -> Response:
    return await _team_page(dash)


@view
async def set_role(dash: Dash) -> Response:
    dash.require_admin("change roles")
    form = await dash.form()
    teams = dash.gateway.auth.teams
    user_id = dash.request.path_params["user_id"]
    try:
        member = await blocking(teams.set_role, dash.session.account_id, user_id, form.get("role"))
    except TeamError as exc:
        return await _team_page(dash, error=exc.message)
    await blocking(
        teams.audit, dash.session.account_id, dash.actor, "member.role", member.email, member.role
    )
    dash.gateway.auth.clear_cache()
    return await _team_page(dash, notice=f"{member.email} is now {member.role}.")


@view
async def remove_member(dash: Dash) -> Response:
    dash.require_admin("remove members")
    await dash.form()
    teams = dash.gateway.auth.teams
    user_id = dash.request.path_params["user_id"]
    try:
        member = await blocking(teams.remove_member, dash.session.account_id, user_id)
    except TeamError as exc:
        return await _team_page(dash, error=exc.message)
    await blocking(teams.audit, dash.session.account_id, dash.actor, "member.remove", member.email)
    dash.gateway.auth.clear_cache()
    return await _team_page(dash, notice=f"{member.email} was removed from the team.")


async def _billing_page(dash: Dash, **values) -> Response:
    dash.require_admin("see billing")
    account = await blocking(dash.gateway.auth.accounts.get_account_by_id, dash.session.account_id)
    if account is None:
        raise Refused("This team no longer exists.")
    spent = await dash.gateway.serving.budget.spent(f"acct:{dash.session.account_id}")
    days = await blocking(
        dash.gateway.ledger.daily_summary, dash.session.account_id, None, None, None, None
    )
    return dash.page(
        "billing.html",
        title="Billing",
        limit=account.spending_limit,
        spent=spent,
        invoices=invoices(days),
        prices=prices(dash),
        **values,
    )


def invoices(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One statement per calendar month (UTC) from the daily rollups, newest first; the
    current month is still open."""
    months: dict[str, dict[str, Any]] = {}
    for row in days:
        month = months.setdefault(
            row["date"][:7],
            {"month": row["date"][:7], "requests": 0, "cost": 0.0, "gpu_hours": 0.0},
        )
        month["requests"] += row["requests"]
        month["cost"] += row["cost"]
        month["gpu_hours"] += row["uptime_seconds"] / 3600
    current = datetime.now(UTC).strftime("%Y-%m")
    for month in months.values():
        month["open"] = month["month"] == current
    return sorted(months.values(), key=lambda m: m["month"], reverse=True)


def prices(dash: Dash) -> dict[str, Any]:
    """What the team pays: each model it can call, and each pool's hourly price (deployments'
    instances and containers)."""
    models = [
        {"name": spec.name, "task": spec.task, "price": spec.price}
        for spec in dash.gateway.catalog.visible(dash.session.account_id)
    ]
    control = dash.gateway.control
    pools = list(control.pools) if control is not None else []
    return {"models": sorted(models, key=lambda m: m["name"]), "pools": pools}


@view
async def billing(dash: Dash) -> Response:
    return await _billing_page(dash)


@view
async def set_limit(dash: Dash) -> Response:
    dash.require_admin("manage billing")
    form = await dash.form()
    raw = form.get("spending_limit", "").strip()
    try:
        limit = float(raw) if raw else None
        if limit is not None and limit < 0:
            raise ValueError
    except ValueError:
        return await _billing_page(dash, error="The limit is an amount in USD, or empty for none.")
    accounts, teams = dash.gateway.auth.accounts, dash.gateway.auth.teams
    account = await blocking(accounts.set_spending_limit, dash.session.account_id, limit)
    shown = "none" if limit is None else f"{limit:g}"
    await blocking(
        teams.audit,
        dash.session.account_id,
        dash.actor,
        "billing.spending_limit",
        account.name if account else "",
        shown,
    )
    dash.gateway.auth.clear_cache()
    return await _billing_page(dash, notice=f"Spending limit set to {shown}.")


@view
async def account(dash: Dash) -> Response:
    row = await blocking(dash.gateway.auth.accounts.get_account_by_id, dash.session.account_id)
    if row is None:
        raise Refused("This team no longer exists.")
    quota = row.gpu_quota if row.gpu_quota is not None else dash.gateway.settings.gpu_quota
    return dash.page("account.html", title="Account", account=row, gpu_quota=quota)
