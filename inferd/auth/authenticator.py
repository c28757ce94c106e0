"""Resolves `Authorization: Bearer <credential>` to a principal.

A credential is an API key or a scoped JWT (`jwt:<header>.<payload>.<signature>`, HS256,
signed with the API key named in `kid`). Verified credentials are cached for a short time so
the hot path does no database read; a revoked key is evicted from every gateway's cache at
once through `Revocations`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from inferd.auth.accounts import AccountService
from inferd.auth.keys import KeyVault
from inferd.auth.teams import TeamService
from inferd.store.db import Database
from inferd.store.models import Account, ApiKey
from inferd.store.team_tables import TeamMember

JWT_PREFIX = "jwt:"
SELF_MINTED_MAX_S = 7 * 24 * 3600  # the seed page: at most a week ahead
SERVER_ISSUED_MAX_S = 366 * 24 * 3600
CLOCK_SKEW_S = 60


STORE_AWAY = "The account store is unavailable; retry."


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class JwtScope:
    jwt_id: str  # hash of the token: identifies it in the ledger and the budget
    models: tuple[str, ...] | None
    spending_limit: float | None
    expires_at: int


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    key_name: str
    is_admin: bool
    concurrency_limit: int | None
    spending_limit: float | None
    jwt: JwtScope | None = None
    # The credential's role in its team (auth/teams.py) and the user it acts for (none: the
    # team's bootstrap key, an admin's).
    role: str = "admin"
    user_id: str | None = None
    # The account's requests never go to a provider not marked zero-retention (routes).
    zero_retention: bool = False

    def allows(self, model: str) -> bool:
        return self.jwt is None or self.jwt.models is None or model in self.jwt.models


class Authenticator:
    def __init__(self, db: Database, vault: KeyVault, cache_ttl_s: float = 2.0) -> None:
        self.db = db
        self.vault = vault
        self.accounts = AccountService(db, vault)
        self.teams = TeamService(db, vault)
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = parse_bearer(authorization)
        now = time.monotonic()
        # Keyed by the credential itself (process memory only) so a hit costs no HMAC.
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            if hit[1].jwt is not None and hit[1].jwt.expires_at <= time.time():
                raise AuthError("The scoped JWT has expired.")
            return hit[1]
        check: Callable[[str], Principal] = (
            self.verify_jwt if token.startswith(JWT_PREFIX) else self._verify_key
        )
        # Single flight: concurrent requests with one credential share one database read.
        lookup = self._inflight.get(token)
        if lookup is None:
            lookup = asyncio.ensure_future(asyncio.to_thread(check, token))
            self._inflight[token] = lookup
            lookup.add_done_callback(lambda _: self._inflight.pop(token, None))
        try:
            principal = await asyncio.shield(lookup)  # raises AuthError for bad credentials
        except DBAPIError:
            # The database is away (a restart, a failover): a credential verified before keeps
            # working from the cache; an unknown one gets a clear 503, never a 500.
            if hit is not None and (hit[1].jwt is None or hit[1].jwt.expires_at > time.time()):
                return hit[1]
            raise AuthError(STORE_AWAY, status=503) from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now + self.cache_ttl_s, principal)
        return principal

    async def current(self, principal: Principal) -> Principal:
        """The principal with its account's limits as they are now: work queued for later (a
        batch line, a webhook) runs under today's limits, not those of when it was queued.
        AuthError when the account is gone. Cached like credentials."""
        key = f"account:{principal.account_id}"
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is None or hit[0] <= now:
            try:
                with_account = await asyncio.to_thread(self._account, principal.account_id)
            except DBAPIError:
                if hit is None:
                    raise AuthError(STORE_AWAY, status=503) from None
                with_account = hit[1]  # the database is away: the limits last read stand
            hit = (now + self.cache_ttl_s, with_account)
            self._cache[key] = hit
        fresh = hit[1]
        return dataclasses.replace(
            principal,
            is_admin=fresh.is_admin,
            concurrency_limit=fresh.concurrency_limit,
            spending_limit=fresh.spending_limit,
            zero_retention=fresh.zero_retention,
        )

    def _account(self, account_id: str) -> Principal:
        with self.db.session() as s:
            account = s.get(Account, account_id)
        if account is None:
            raise AuthError("The account no longer exists.")
        return _principal(account, "")

    def clear_cache(self) -> None:
        self._cache.clear()

    def evict(self, account_id: str, key_name: str) -> None:
        """Forget cached credentials of one key (it was revoked)."""
        for token, (_, principal) in list(self._cache.items()):
            if principal.account_id == account_id and principal.key_name == key_name:
                self._cache.pop(token, None)

    # -- verification (worker threads) ------------------------------------------------------

    def _verify_key(self, token: str) -> Principal:
        digest = self.vault.digest(token)
        with self.db.session() as s:
            row = s.execute(
                select(ApiKey.name, ApiKey.key_hash, ApiKey.user_id, TeamMember.role, Account)
                .join(Account, Account.id == ApiKey.account_id)
                .outerjoin(
                    TeamMember,
                    (TeamMember.account_id == ApiKey.account_id)
                    & (TeamMember.user_id == ApiKey.user_id),
                )
                .where(ApiKey.key_hash == digest)
            ).first()
        # The index lookup is on a keyed hash (reveals nothing); the final check is
        # constant-time all the same.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise AuthError("Invalid API key.")
        key_name, _, user_id, role, account = row
        if user_id is not None and role is None:
            raise AuthError("The user who created this API key is no longer in the team.")
        principal = _principal(account, key_name)
        return dataclasses.replace(principal, role=role or "admin", user_id=user_id)

    def verify_jwt(self, token: str) -> Principal:
        raw = token[len(JWT_PREFIX) :]
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError:
            raise AuthError("Malformed scoped JWT.") from None
        if header.get("alg") != "HS256":
            raise AuthError("Scoped JWTs must be signed with HS256.")
        account_id, kid_name = parse_kid(header.get("kid"))
        # `kid` may name an alias (`auto` of an older account's first key); the principal
        # carries the key's own name, under which usage is counted and revocation evicts.
        signer = self.accounts.signing_key(account_id, kid_name)
        if signer is None:
            raise AuthError("The scoped JWT's signing key does not exist or was revoked.")
        key_name, key = signer
        try:
            claims = jwt.decode(
                raw,
                key,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("The scoped JWT has expired.") from None
        except jwt.PyJWTError:
            raise AuthError("Invalid scoped JWT.") from None
        if claims.get("sub") != account_id:
            raise AuthError("Invalid scoped JWT: `sub` does not match `kid`.")
        exp = int(claims["exp"])
        horizon = SERVER_ISSUED_MAX_S if self._server_issued(claims) else SELF_MINTED_MAX_S
        if exp > time.time() + horizon + CLOCK_SKEW_S:
            raise AuthError("Invalid scoped JWT: `exp` is too far ahead (at most a week).")
        with self.db.session() as s:
            account = s.get(Account, account_id)
        if account is None:
            raise AuthError("Invalid scoped JWT: unknown account.")
        models = claims.get("models", claims.get("model"))
        if isinstance(models, str):
            models = [models]
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            raise AuthError("Invalid scoped JWT: `models` must be a list of model names.")
        scope = JwtScope(
            jwt_id=hashlib.sha256(token.encode()).hexdigest()[:32],
            models=tuple(models) if models else None,
            spending_limit=_spending_limit(claims.get("spending_limit")),
            expires_at=exp,
        )
        return _principal(account, key_name, scope)

    def _server_issued(self, claims: dict) -> bool:
        seal = claims.get("srv")
        return isinstance(seal, str) and seal == self.issuer_seal(claims)

    def issuer_seal(self, claims: dict) -> str:
        """Marks tokens this server minted (they may live a year; self-minted ones a week)."""
        return self.vault.digest(f"issued:{claims.get('jti')}:{claims.get('exp')}")[:32]


def _principal(account: Account, key_name: str, scope: JwtScope | None = None) -> Principal:
    return Principal(
        account.id,
        key_name,
        account.is_admin,
        account.concurrency_limit,
        account.spending_limit,
        scope,
        zero_retention=bool(account.zero_retention),
    )


def _spending_limit(value: object) -> float | None:
    """A scoped JWT's `spending_limit` claim: a number (or numeric string), finite, >= 0."""
    if value is None:
        return None
    try:
        limit = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a float's range
        limit = math.nan
    if isinstance(value, bool) or not math.isfinite(limit) or limit < 0:
        raise AuthError("Invalid scoped JWT: `spending_limit` must be a number, at least 0.")
    return limit


def parse_kid(kid: object) -> tuple[str, str]:
    """`<account id>:<base64(key name)>`; account ids may themselves contain colons."""
    if not isinstance(kid, str) or ":" not in kid:
        raise AuthError("Invalid scoped JWT: missing or malformed `kid`.")
    account_id, _, encoded = kid.rpartition(":")
    try:
        # ValueError: not ASCII (binascii.Error and UnicodeDecodeError are ValueErrors too).
        key_name = base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError:
        raise AuthError("Invalid scoped JWT: malformed `kid`.") from None
    if "\x00" in account_id or "\x00" in key_name:  # no such names; PostgreSQL refuses NUL
        raise AuthError("Invalid scoped JWT: malformed `kid`.")
    return account_id, key_name


def parse_bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("Missing Authorization header: send `Authorization: Bearer <api key>`.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header: expected `Bearer <api key>`.")
    return token
