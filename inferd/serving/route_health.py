"""Health of route targets: consecutive failures, cooldowns and the half-open probe.

A target that fails `route_failure_threshold` times in a row rests for `route_cooldown_s`;
then one request (the probe, claimed so only one goes) tries it again: success puts it back,
failure starts another cooldown. With Redis the state is shared by every gateway (a hash per
target, the probe a `SET NX` claim) and mirrored in each gateway, pulled once a second, so a
healthy request reads no store at all; without Redis it lives in the one gateway.

Latency (time to the first byte of output) is measured per gateway over a sliding window and
feeds the `fastest` policy. Nothing here holds request content: states carry a status and
the error's code only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inferd.catalog import Catalog, Route, RouteTarget

log = logging.getLogger("inferd.routing")

LATENCY_WINDOW = 100  # samples per target
SYNC_INTERVAL_S = 1.0


@dataclass
class TargetState:
    failures: int = 0
    cooldown_until: float = 0.0  # unix seconds; 0: never cooled down since its last success
    last_error: str | None = None

    def phase(self, now: float) -> str:
        if self.cooldown_until == 0.0:
            return "healthy"
        return "cooling_down" if now < self.cooldown_until else "half_open"


@dataclass(frozen=True)
class TargetHealth:
    """What `GET /v1/routes/{name}/health` shows of one target."""

    state: str  # healthy, cooling_down, half_open
    failures: int
    cooldown_until: float | None
    last_error: str | None
    p50_ms: float | None
    samples: int


_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local cooled = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
redis.call('HSET', KEYS[1], 'error', ARGV[4])
if failures >= tonumber(ARGV[1]) or cooled > 0 then
  redis.call('HSET', KEYS[1], 'until', tostring(tonumber(ARGV[2]) + tonumber(ARGV[3])))
end
redis.call('EXPIRE', KEYS[1], 86400)
return redis.call('HMGET', KEYS[1], 'failures', 'until', 'error')
"""


class RouteHealth:
    def __init__(
        self,
        catalog: Catalog,
        threshold: int,
        cooldown_s: float,
        probe_ttl_s: float,
        redis: aioredis.Redis | None = None,
        prefix: str = "inferd",
    ) -> None:
        self.catalog = catalog
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.probe_ttl_s = probe_ttl_s
        self.redis = redis
        self.prefix = prefix
        self._states: dict[str, TargetState] = {}
        self._probes: dict[str, float] = {}  # in-process probe claims: key → expiry
        self._latency: dict[str, deque[float]] = {}
        self._fail = redis.register_script(_FAIL) if redis is not None else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.redis is not None:
            self._task = asyncio.create_task(self._sync(), name="route-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _key(self, route: Route, target: RouteTarget) -> str:
        return f"{self.prefix}:route:{route.name}:{target.key}"

    # -- the request path -----------------------------------------------------------------------

    def phase(self, route: Route, target: RouteTarget, now: float | None = None) -> str:
        state = self._states.get(self._key(route, target))
        return "healthy" if state is None else state.phase(now or time.time())

    async def claim_probe(self, route: Route, target: RouteTarget) -> bool:
        """True for the one request that may try a target whose cooldown ended."""
        key = self._key(route, target) + ":probe"
        if self.redis is not None:
            try:
                return bool(
                    await self.redis.set(key, "1", nx=True, px=int(self.probe_ttl_s * 1000))
                )
            except RedisError:
                pass  # fall back to this gateway's own claim
        now = time.monotonic()
        if self._probes.get(key, 0.0) > now:
            return False
        self._probes[key] = now + self.probe_ttl_s
        return True

    def success(self, route: Route, target: RouteTarget, latency_ms: float) -> None:
        key = self._key(route, target)
        window = self._latency.get(key)
        if window is None:
            window = self._latency[key] = deque(maxlen=LATENCY_WINDOW)
        window.append(latency_ms)
        state = self._states.get(key)
        if state is None:
            return  # the common case: nothing to reset, no store to touch
        del self._states[key]
        self._probes.pop(key + ":probe", None)
        if self.redis is not None:
            task = asyncio.get_running_loop().create_task(self._clear(key))
            task.add_done_callback(_quiet)

    async def failure(self, route: Route, target: RouteTarget, code: str) -> None:
        key = self._key(route, target)
        now = time.time()
        self._probes.pop(key + ":probe", None)
        if self._fail is not None:
            try:
                failures, until, error = await self._fail(
                    keys=[key], args=[self.threshold, now, self.cooldown_s, code]
                )
                self._states[key] = TargetState(int(failures), float(until or 0), _text(error))
                if until:
                    await self.redis.delete(key + ":probe")  # type: ignore[union-attr]
                return
            except RedisError:
                pass  # counted here only until Redis is back
        state = self._states.setdefault(key, TargetState())
        state.failures += 1
        state.last_error = code
        if state.failures >= self.threshold or state.cooldown_until:
            state.cooldown_until = now + self.cooldown_s
        if state.cooldown_until:
            log.warning(
                "route target cooling down",
                extra={"model": route.name, "served_by": target.label, "error": code},
            )

    def p50_ms(self, route: Route, target: RouteTarget) -> float | None:
        window = self._latency.get(self._key(route, target))
        return statistics.median(window) if window else None

    def report(self, route: Route, target: RouteTarget) -> TargetHealth:
        key = self._key(route, target)
        state = self._states.get(key) or TargetState()
        window = self._latency.get(key) or ()
        return TargetHealth(
            state=state.phase(time.time()),
            failures=state.failures,
            cooldown_until=state.cooldown_until or None,
            last_error=state.last_error,
            p50_ms=statistics.median(window) if window else None,
            samples=len(window),
        )

    async def refresh(self, route: Route) -> None:
        """Read one route's shared state now (the health endpoint's answer is current)."""
        if self.redis is not None:
            with contextlib.suppress(RedisError):
                await self._pull([(self._key(route, t)) for t in route.targets])

    # -- sharing --------------------------------------------------------------------------------

    async def _clear(self, key: str) -> None:
        assert self.redis is not None
        await self.redis.delete(key, key + ":probe")

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            keys = [
                self._key(route, target)
                for route in self.catalog.routes()
                for target in route.targets
            ]
            if not keys:
                continue
            try:
                await self._pull(keys)
            except RedisError as exc:
                log.warning("route health not synced", extra={"error": type(exc).__name__})

    async def _pull(self, keys: list[str]) -> None:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "failures", "until", "error")
            answers = await pipe.execute()
        for key, (failures, until, error) in zip(keys, answers, strict=True):
            if failures is None and until is None:
                self._states.pop(key, None)
            else:
                self._states[key] = TargetState(int(failures or 0), float(until or 0), _text(error))


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("route health not cleared", extra={"error": type(task.exception()).__name__})
