"""Handlers of the teams API. Roles are the server's to enforce: a member's key (one a member
created) reads its team and usage but gets 403 on billing and roles; scoped JWTs get 403 on
all of it (Gateway.key_holder)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.api.teams.protocol import MemberObject, SetRole, SetSso, UpdateBilling
from inferd.auth import Principal
from inferd.auth.teams import ADMIN, Member, TeamError


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _call(fn, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except TeamError as exc:
        raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None


async def _member(request: Request) -> Principal:
    return await _gateway(request).key_holder(request, "Scoped JWTs cannot manage a team.")


async def _team_admin(request: Request, what: str) -> Principal:
    principal = await _member(request)
    if principal.role != ADMIN:
        raise APIError(403, f"Only a team admin may {what}.", code="forbidden")
    return principal


async def actor(gateway: Gateway, principal: Principal) -> str:
    """Who did it, for the audit log: the user behind the credential, else the key."""
    if principal.user_id is not None:
        email = await asyncio.to_thread(gateway.auth.teams.email_of, principal.user_id)
        if email:
            return f"user:{email}"
    return f"key:{principal.key_name}"


def _member_object(m: Member) -> MemberObject:
    return {
        "user_id": m.user_id,
        "email": m.email,
        "role": m.role,  # type: ignore[typeddict-item]
        "joined_at": m.joined_at.isoformat(),
        "last_login_at": m.last_login_at.isoformat() if m.last_login_at else None,
    }


async def get_team(request: Request) -> Response:
    principal = await _member(request)
    gateway = _gateway(request)
    teams = gateway.auth.teams
    account = await asyncio.to_thread(gateway.auth.accounts.get_account_by_id, principal.account_id)
    if account is None:
        raise APIError(404, "This team no longer exists.", code="not_found")
    members = await asyncio.to_thread(teams.members, principal.account_id)
    email = (
        await asyncio.to_thread(teams.email_of, principal.user_id) if principal.user_id else None
    )
    return JSONResponse(
        {
            "id": account.id,
            "team_id": account.name,
            "role": principal.role,
            "user": email,
            "members": [_member_object(m) for m in members],
        }
    )


async def set_member_role(request: Request) -> Response:
    principal = await _team_admin(request, "change roles")
    gateway = _gateway(request)
    body = await gateway.read_json(request, SetRole)
    user_id = request.path_params["user_id"]
    member = await _call(gateway.auth.teams.set_role, principal.account_id, user_id, body.role)
    who = await actor(gateway, principal)
    await asyncio.to_thread(
        gateway.auth.teams.audit, principal.account_id, who, "member.role", member.email, body.role
    )
    gateway.auth.clear_cache()  # keys of that user act with the new role at once here
    return JSONResponse(_member_object(member))


async def remove_member(request: Request) -> Response:
    principal = await _team_admin(request, "remove members")
    gateway = _gateway(request)
    user_id = request.path_params["user_id"]
    member = await _call(gateway.auth.teams.remove_member, principal.account_id, user_id)
    who = await actor(gateway, principal)
    await asyncio.to_thread(
        gateway.auth.teams.audit, principal.account_id, who, "member.remove", member.email
    )
    gateway.auth.clear_cache()  # the member's keys stop working here at once
    return JSONResponse(_member_object(member))


async def get_billing(request: Request) -> Response:
    principal = await _team_admin(request, "see billing")
    gateway = _gateway(request)
    account = await asyncio.to_thread(gateway.auth.accounts.get_account_by_id, principal.account_id)
    if account is None:
        raise APIError(404, "This team no longer exists.", code="not_found")
    spent = await gateway.serving.budget.spent(f"acct:{principal.account_id}")
    return JSONResponse({"spending_limit": account.spending_limit, "spent": round(spent, 6)})


async def update_billing(request: Request) -> Response:
    principal = await _team_admin(request, "manage billing")
    gateway = _gateway(request)
    body = await gateway.read_json(request, UpdateBilling)
    account = await asyncio.to_thread(
        gateway.auth.accounts.set_spending_limit, principal.account_id, body.spending_limit
    )
    if account is None:
        raise APIError(404, "This team no longer exists.", code="not_found")
    who = await actor(gateway, principal)
    limit = "none" if body.spending_limit is None else f"{body.spending_limit:g}"
    await asyncio.to_thread(
        gateway.auth.teams.audit,
        principal.account_id,
        who,
        "billing.spending_limit",
        account.name,
        limit,
    )
    gateway.auth.clear_cache()
    spent = await gateway.serving.budget.spent(f"acct:{principal.account_id}")
    return JSONResponse({"spending_limit": account.spending_limit, "spent": round(spent, 6)})


async def audit_log(request: Request) -> Response:
    principal = await _team_admin(request, "read the audit log")
    entries = await asyncio.to_thread(_gateway(request).auth.teams.audit_log, principal.account_id)
    return JSONResponse(
        [
            {
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in entries
        ]
    )


async def set_sso(request: Request) -> Response:
    """The operator registers a team's provider (what the page asks to send by email)."""
    gateway = _gateway(request)
    principal = await gateway.key_holder(request, "Scoped JWTs cannot manage accounts.")
    if not principal.is_admin:
        raise APIError(403, "Only a server admin may configure single sign-on.", code="forbidden")
    body = await gateway.read_json(request, SetSso)
    team = request.path_params["name"]
    config = await _call(
        gateway.auth.teams.set_sso,
        team,
        body.issuer,
        body.client_id,
        body.client_secret,
        body.admin_email,
    )
    who = await actor(gateway, principal)
    await asyncio.to_thread(
        gateway.auth.teams.audit, config.account_id, who, "sso.configure", config.issuer
    )
    return JSONResponse(_sso_object(request, config.team, config))


async def get_sso(request: Request) -> Response:
    gateway = _gateway(request)
    principal = await gateway.key_holder(request, "Scoped JWTs cannot manage accounts.")
    if not principal.is_admin:
        raise APIError(403, "Only a server admin may read single sign-on.", code="forbidden")
    team = request.path_params["name"]
    config = await asyncio.to_thread(gateway.auth.teams.sso, team)
    if config is None:
        raise APIError(404, f"No single sign-on for `{team[:100]}`.", code="not_found")
    return JSONResponse(_sso_object(request, team, config))


def _sso_object(request: Request, team: str, config: Any) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "team_id": team,
        "issuer": config.issuer,
        "client_id": config.client_id,
        "admin_email": config.admin_email,
        "login_url": f"{base}/sso/{team}/login",
    }
