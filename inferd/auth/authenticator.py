"""Resolves `Authorization: Bearer <key>` to a principal, with a short positive cache so the
hot path does no database read for a key seen in the last `cache_ttl_s` seconds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import select

from inferd.auth.keys import key_hash
from inferd.store.db import Database
from inferd.store.models import Account, ApiKey


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    key_name: str
    is_admin: bool
    concurrency_limit: int | None


class Authenticator:
    def __init__(self, db: Database, secret: bytes, cache_ttl_s: float = 2.0) -> None:
        self.db = db
        self.secret = secret
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = parse_bearer(authorization)
        now = time.monotonic()
        # Keyed by the credential itself (process memory only) so a hit costs no HMAC.
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        digest = key_hash(self.secret, token)
        # Single flight: concurrent requests with the same key share one database read.
        lookup = self._inflight.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(asyncio.to_thread(self._lookup, digest))
            self._inflight[digest] = lookup
            lookup.add_done_callback(lambda _: self._inflight.pop(digest, None))
        principal = await asyncio.shield(lookup)
        if principal is None:
            self._cache.pop(token, None)
            raise AuthError("Invalid API key.")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now + self.cache_ttl_s, principal)
        return principal

    def _lookup(self, digest: str) -> Principal | None:
        # The digest is an index lookup; equality on a keyed hash leaks nothing about the key.
        with self.db.session() as s:
            row = s.execute(
                select(ApiKey, Account)
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        key, account = row
        return Principal(account.id, key.name, account.is_admin, account.concurrency_limit)


def parse_bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("Missing Authorization header: send `Authorization: Bearer <api key>`.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header: expected `Bearer <api key>`.")
    return token
