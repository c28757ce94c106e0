"""Handlers: /v1/accounts (admin), /v1/me, /v1/api-tokens, /v1/scoped-jwt, /v1/usage."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.api.tenancy.protocol import (
    CreateAccount,
    CreateApiToken,
    CreateScopedJwt,
    UpdateAccount,
    UpdateMe,
)
from inferd.auth import Principal
from inferd.auth.accounts import FIRST_KEY, Conflict
from inferd.auth.scoped_jwt import ScopedJwtError, inspect, mint
from inferd.billing.ledger import parse_when


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _key_holder(request: Request) -> Principal:
    return await _gateway(request).key_holder(
        request, "Scoped JWTs cannot manage accounts or keys."
    )


async def _admin(request: Request) -> Principal:
    principal = await _key_holder(request)
    if not principal.is_admin:
        raise APIError(403, "Only an admin may manage accounts.", code="forbidden")
    return principal


async def create_account(request: Request) -> Response:
    await _admin(request)
    gateway = _gateway(request)
    body = await gateway.read_json(request, CreateAccount)
    accounts = gateway.auth.accounts
    try:
        account = await asyncio.to_thread(
            accounts.create_account,
            body.name,
            is_admin=body.is_admin,
            concurrency_limit=body.concurrency_limit,
            zero_retention=body.zero_retention,
            spending_limit=body.spending_limit,
            email=body.email,
            gpu_quota=body.gpu_quota,
        )
        key = await asyncio.to_thread(accounts.create_key, account.id, FIRST_KEY)
    except Conflict as exc:
        raise APIError(409, str(exc), code="conflict") from None
    return JSONResponse(
        {"id": account.id, "name": account.name, "api_key": key.key, "api_key_name": key.name}
    )


async def list_accounts(request: Request) -> Response:
    await _admin(request)
    rows = await asyncio.to_thread(_gateway(request).auth.accounts.list_accounts)
    return JSONResponse([_account(a) for a in rows])


async def update_account(request: Request) -> Response:
    await _admin(request)
    gateway = _gateway(request)
    body = await gateway.read_json(request, UpdateAccount)
    limits = {field: getattr(body, field) for field in body.model_fields_set}
    name = request.path_params["name"]
    account = await asyncio.to_thread(gateway.auth.accounts.update_limits, name, limits)
    if account is None:
        raise APIError(404, f"No account named `{name}`.", code="not_found", param="name")
    return JSONResponse(_account(account))


def _account(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "is_admin": a.is_admin,
        "concurrency_limit": a.concurrency_limit,
        "spending_limit": a.spending_limit,
        "gpu_quota": a.gpu_quota,
        "email": a.email,
        "zero_retention": bool(a.zero_retention),
    }


async def update_me(request: Request) -> Response:
    principal = await _key_holder(request)
    gateway = _gateway(request)
    body = await gateway.read_json(request, UpdateMe)
    account = await asyncio.to_thread(
        gateway.auth.accounts.set_email, principal.account_id, body.email
    )
    if account is None:
        raise APIError(404, "This account no longer exists.", code="not_found")
    return JSONResponse({"id": account.id, "name": account.name, "email": account.email})


async def list_api_tokens(request: Request) -> Response:
    principal = await _key_holder(request)
    keys = await asyncio.to_thread(_gateway(request).auth.accounts.list_keys, principal.account_id)
    return JSONResponse(
        [
            {
                "name": k.name,
                "prefix": k.prefix,
                "created_at": k.created_at.isoformat(),
                "alias_of": k.alias_of,
            }
            for k in keys
        ]
    )


async def create_api_token(request: Request) -> Response:
    principal = await _key_holder(request)
    gateway = _gateway(request)
    body = await gateway.read_json(request, CreateApiToken)
    try:
        created = await asyncio.to_thread(
            gateway.auth.accounts.create_key,
            principal.account_id,
            body.name,
            None,
            principal.user_id,  # the new key acts with its creator's role
        )
    except Conflict as exc:
        raise APIError(409, str(exc), code="conflict") from None
    return JSONResponse({"name": created.name, "token": created.key})


async def delete_api_token(request: Request) -> Response:
    principal = await _key_holder(request)
    gateway = _gateway(request)
    name = request.path_params["name"]
    evict = await asyncio.to_thread(gateway.auth.accounts.delete_key, principal.account_id, name)
    if evict is None:
        raise APIError(404, f"No API key named `{name}`.", code="not_found")
    await request.app.state.revocations.revoke(principal.account_id, evict)
    return JSONResponse({"deleted": name})


async def create_scoped_jwt(request: Request) -> Response:
    principal = await _gateway(request).principal(request)
    gateway = _gateway(request)
    body = await gateway.read_json(request, CreateScopedJwt)
    try:
        token = await asyncio.to_thread(
            mint,
            gateway.auth,
            principal,
            body.api_key_name,
            body.models,
            body.expires_delta,
            body.expires_at,
            body.spending_limit,
        )
    except ScopedJwtError as exc:
        raise APIError(exc.status, str(exc), code="invalid_scoped_jwt_request") from None
    return JSONResponse({"token": token})


async def decode_scoped_jwt(request: Request) -> Response:
    principal = await _key_holder(request)
    token = request.query_params.get("jwtoken")
    if not token:
        raise APIError(400, "Send the token as the `jwtoken` query parameter.", param="jwtoken")
    try:
        claims = await asyncio.to_thread(inspect, _gateway(request).auth, principal, token)
    except ScopedJwtError as exc:
        raise APIError(exc.status, str(exc), code="invalid_scoped_jwt") from None
    return JSONResponse(claims)


async def usage(request: Request) -> Response:
    principal = await _key_holder(request)
    gateway = _gateway(request)
    q = request.query_params
    try:
        start, end = parse_when(q.get("from")), parse_when(q.get("to"), end=True)
    except ValueError:
        raise APIError(
            400, "`from` and `to` take YYYY-MM-DD, ISO 8601 or unix seconds.", param="from"
        ) from None
    account_id = principal.account_id
    if q.get("account") and principal.is_admin:
        account_id = q["account"]
    await gateway.ledger.flush()  # include requests that just finished
    rows = await asyncio.to_thread(
        gateway.ledger.summary, account_id, start, end, q.get("model"), q.get("key")
    )
    return JSONResponse(
        {
            "account_id": account_id,
            "usage": rows,
            "total_cost": round(sum(r["cost"] for r in rows), 10),
            "total_requests": sum(r["requests"] for r in rows),
        }
    )
