"""Spending limits, enforced before work starts.

A request reserves its maximum cost (prompt bound + max tokens) against every scope that has a
limit (the account, the scoped JWT); it is refused (402) if settled + reserved + this would pass
a limit. When it ends, the actual cost is settled and the rest of the reservation released, so
concurrent requests can never push settled spending over a limit.

Settled totals start from the usage ledger the first time a scope is seen; after that the
budget itself is the running total (the ledger is written asynchronously).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis


class OverBudget(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Scope:
    key: str  # "acct:<id>" or "jwt:<id>"
    limit: float
    label: str  # for the error message


@dataclass(slots=True)
class Reservation:
    scopes: tuple[Scope, ...]
    amount: float


# Returns the settled spending of a scope key from the ledger (runs in a thread).
LedgerTotal = Callable[[str], float]


class Budget(ABC):
    def __init__(self, ledger_total: LedgerTotal) -> None:
        self.ledger_total = ledger_total

    @abstractmethod
    async def reserve(self, scopes: tuple[Scope, ...], amount: float) -> Reservation: ...

    @abstractmethod
    async def settle(self, reservation: Reservation, actual: float) -> None: ...

    @abstractmethod
    async def charge(self, scope_key: str, amount: float) -> None:
        """Add a cost no request reserved (a deployment's uptime) to a scope's total."""

    @abstractmethod
    async def spent(self, scope_key: str) -> float:
        """Settled plus reserved: what a new reservation is checked against."""


def refusal(scope: Scope, spent: float) -> OverBudget:
    return OverBudget(
        f"Spending limit reached for {scope.label}: ${spent:.6f} of ${scope.limit:.6f} used "
        "(including requests in flight)."
    )


class InProcessBudget(Budget):
    def __init__(self, ledger_total: LedgerTotal) -> None:
        super().__init__(ledger_total)
        self._settled: dict[str, float] = {}
        self._reserved: dict[str, float] = {}
        self._loading: dict[str, asyncio.Future[float]] = {}

    async def _load(self, key: str) -> None:
        if key in self._settled:
            return
        future = self._loading.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(self.ledger_total, key))
            self._loading[key] = future
        total = await asyncio.shield(future)
        self._loading.pop(key, None)
        self._settled.setdefault(key, total)

    async def reserve(self, scopes: tuple[Scope, ...], amount: float) -> Reservation:
        for scope in scopes:
            await self._load(scope.key)
        # No await between the check and the update: atomic on the event loop.
        for scope in scopes:
            used = self._settled[scope.key] + self._reserved.get(scope.key, 0.0)
            if used + amount > scope.limit + 1e-12:
                raise refusal(scope, used)
        for scope in scopes:
            self._reserved[scope.key] = self._reserved.get(scope.key, 0.0) + amount
        return Reservation(scopes, amount)

    async def settle(self, reservation: Reservation, actual: float) -> None:
        for scope in reservation.scopes:
            self._reserved[scope.key] -= reservation.amount
            self._settled[scope.key] += min(actual, reservation.amount)

    async def charge(self, scope_key: str, amount: float) -> None:
        await self._load(scope_key)
        self._settled[scope_key] += amount

    async def spent(self, scope_key: str) -> float:
        await self._load(scope_key)
        return self._settled[scope_key] + self._reserved.get(scope_key, 0.0)


RESERVE = """
for i, key in ipairs(KEYS) do
  local settled = tonumber(redis.call('HGET', key, 'settled') or '0')
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if settled + reserved + tonumber(ARGV[1]) > tonumber(ARGV[i + 1]) + 1e-12 then
    return {i, tostring(settled + reserved)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBYFLOAT', key, 'reserved', ARGV[1])
end
return {0, '0'}
"""

SETTLE = """
for i, key in ipairs(KEYS) do
  redis.call('HINCRBYFLOAT', key, 'reserved', -tonumber(ARGV[1]))
  redis.call('HINCRBYFLOAT', key, 'settled', ARGV[2])
end
return 1
"""


class RedisBudget(Budget):
    """The same rules, shared by every gateway: one script checks and reserves atomically."""

    def __init__(
        self, client: aioredis.Redis, ledger_total: LedgerTotal, prefix: str = "inferd"
    ) -> None:
        super().__init__(ledger_total)
        self.redis = client
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)
        self._known: set[str] = set()

    def _key(self, scope_key: str) -> str:
        return f"{self.prefix}:spend:{scope_key}"

    async def _load(self, scope_key: str) -> None:
        if scope_key in self._known:
            return
        key = self._key(scope_key)
        if not await self.redis.hexists(key, "settled"):
            total = await asyncio.to_thread(self.ledger_total, scope_key)
            await self.redis.hsetnx(key, "settled", repr(total))
        self._known.add(scope_key)

    async def reserve(self, scopes: tuple[Scope, ...], amount: float) -> Reservation:
        for scope in scopes:
            await self._load(scope.key)
        index, used = await self._reserve(
            keys=[self._key(s.key) for s in scopes],
            args=[repr(amount), *(repr(s.limit) for s in scopes)],
        )
        if int(index):
            raise refusal(scopes[int(index) - 1], float(used))
        return Reservation(scopes, amount)

    async def settle(self, reservation: Reservation, actual: float) -> None:
        await self._settle(
            keys=[self._key(s.key) for s in reservation.scopes],
            args=[repr(reservation.amount), repr(min(actual, reservation.amount))],
        )

    async def charge(self, scope_key: str, amount: float) -> None:
        await self._load(scope_key)
        await self.redis.hincrbyfloat(self._key(scope_key), "settled", amount)

    async def spent(self, scope_key: str) -> float:
        await self._load(scope_key)
        settled, reserved = await self.redis.hmget(self._key(scope_key), "settled", "reserved")
        return float(settled or 0) + float(reserved or 0)
