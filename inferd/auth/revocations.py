"""Makes a revoked key stop working at once on every gateway process.

Without Redis there is one gateway and its cache is evicted directly. With Redis, a revocation
is published on a channel every gateway subscribes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import redis.asyncio as aioredis

from inferd.auth.authenticator import Authenticator

log = logging.getLogger("inferd.auth")


class Revocations:
    def __init__(self, auth: Authenticator, client: aioredis.Redis | None, prefix: str) -> None:
        self.auth = auth
        self.redis = client
        self.channel = f"{prefix}:revocations"
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        if self.redis is not None:
            self._listener = asyncio.create_task(self._listen())
            await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def revoke(self, account_id: str, key_name: str) -> None:
        self.auth.evict(account_id, key_name)
        if self.redis is not None:
            await self.redis.publish(self.channel, orjson.dumps([account_id, key_name]))

    async def _listen(self) -> None:
        assert self.redis is not None
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            account_id, key_name = orjson.loads(message["data"])
                            self.auth.evict(account_id, key_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # While disconnected, also drop the whole cache: a missed revocation must not
                # outlive the reconnect.
                self.auth.clear_cache()
                log.warning(
                    "revocation channel lost; reconnecting", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(1)
