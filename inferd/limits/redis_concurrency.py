"""Concurrency limits shared by every gateway through Redis.

Each (account, model) is a sorted set of slot ids scored by lease expiry. Acquiring is one
atomic script: drop expired leases, compare the count with the limit, add the slot. Each gateway
renews the leases of the slots it holds every `ttl/3`, so a gateway that dies leaks its slots
for at most `ttl` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time

import redis.asyncio as aioredis

from inferd.limits.concurrency import ConcurrencyLimiter, RateLimited

ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return 1
"""


class RedisLimiter(ConcurrencyLimiter):
    def __init__(
        self,
        client: aioredis.Redis,
        default_limit: int,
        prefix: str = "inferd",
        lease_ttl_s: float = 15.0,
    ) -> None:
        super().__init__(default_limit)
        self.redis = client
        self.prefix = prefix
        self.ttl = lease_ttl_s
        self._acquire = client.register_script(ACQUIRE)
        self._gateway = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._held: dict[str, str] = {}  # slot -> key
        self._renewer: asyncio.Task[None] | None = None

    def _key(self, account_id: str, model: str) -> str:
        return f"{self.prefix}:inflight:{account_id}:{model}"

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewer:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    async def acquire(self, account_id: str, model: str, limit: int | None) -> str:
        key = self._key(account_id, model)
        slot = f"{self._gateway}:{next(self._ids)}"
        ok = await self._acquire(
            keys=[key], args=[time.time(), limit or self.default_limit, self.ttl, slot]
        )
        if not ok:
            raise RateLimited("Rate limited")
        self._held[slot] = key
        return slot

    async def release(self, account_id: str, model: str, slot: str) -> None:
        key = self._held.pop(slot, None)
        if key is not None:
            await self.redis.zrem(key, slot)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not self._held:
                continue
            expiry = time.time() + self.ttl
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for slot, key in list(self._held.items()):
                        pipe.zadd(key, {slot: expiry}, xx=True)
                    await pipe.execute()
            except Exception:  # Redis hiccup: the next round retries before leases lapse
                continue
