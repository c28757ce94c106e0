"""Minting and inspecting scoped JWTs (POST/GET /v1/scoped-jwt), per the seed page's format."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt

from inferd.auth.authenticator import (
    JWT_PREFIX,
    SERVER_ISSUED_MAX_S,
    Authenticator,
    AuthError,
    Principal,
    parse_kid,
)

DEFAULT_LIFETIME_S = 365 * 24 * 3600  # "no expiration -- ATM that means 1 year"


class ScopedJwtError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def kid_for(account_id: str, key_name: str) -> str:
    return f"{account_id}:{base64.b64encode(key_name.encode()).decode()}"


def mint(
    auth: Authenticator,
    caller: Principal,
    api_key_name: str,
    models: list[str] | None,
    expires_delta: int | None,
    expires_at: int | None,
    spending_limit: float | None,
) -> str:
    if caller.jwt is not None:
        raise ScopedJwtError("A scoped JWT cannot mint other tokens; use an API key.", 403)
    signer = auth.accounts.signing_key(caller.account_id, api_key_name)
    if signer is None:
        raise ScopedJwtError(f"No API key named `{api_key_name}` in this account.", 404)
    key = signer[1]
    now = int(time.time())
    if expires_delta is not None and expires_at is not None:
        raise ScopedJwtError("Send `expires_delta` or `expires_at`, not both.")
    exp = now + (expires_delta if expires_delta is not None else DEFAULT_LIFETIME_S)
    if expires_at is not None:
        exp = int(expires_at)
    if exp <= now:
        raise ScopedJwtError("The expiry must be in the future.")
    if exp > now + SERVER_ISSUED_MAX_S:
        raise ScopedJwtError("The expiry can be at most one year ahead.")
    claims: dict[str, Any] = {"sub": caller.account_id, "exp": exp, "jti": secrets.token_hex(8)}
    if models:
        claims["models"] = models
    if spending_limit is not None:
        claims["spending_limit"] = spending_limit
    claims["srv"] = auth.issuer_seal(claims)
    token = jwt.encode(
        claims,
        key,
        algorithm="HS256",
        headers={"kid": kid_for(caller.account_id, api_key_name), "typ": "JWT"},
    )
    return JWT_PREFIX + token


def inspect(auth: Authenticator, caller: Principal, token: str) -> dict[str, Any]:
    if not token.startswith(JWT_PREFIX):
        token = JWT_PREFIX + token
    try:
        decoded = auth.verify_jwt(token)
    except AuthError as exc:
        raise ScopedJwtError(str(exc), 400) from None
    if decoded.account_id != caller.account_id:
        raise ScopedJwtError("This token was not signed by your account.", 403)
    assert decoded.jwt is not None
    return {
        "expires_at": decoded.jwt.expires_at,
        "models": list(decoded.jwt.models) if decoded.jwt.models else None,
        "spending_limit": decoded.jwt.spending_limit,
        # As the token names it (`auto` may be an alias of the key in `decoded.key_name`).
        "api_key_name": parse_kid(jwt.get_unverified_header(token[len(JWT_PREFIX) :])["kid"])[1],
    }
