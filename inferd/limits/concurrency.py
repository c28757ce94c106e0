"""Concurrency limits: in-flight requests per account and model (429 "Rate limited").

A slot is taken before work starts and released on every exit path (success, error, client
disconnect, worker crash) by `Admission.release`. `InProcessLimiter` serves one gateway;
`RedisLimiter` (limits/redis_concurrency.py) is exact across gateway processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict


class RateLimited(Exception):
    pass


class ConcurrencyLimiter(ABC):
    # True when release never waits on I/O (the caller may then skip cancellation shielding).
    local = False

    def __init__(self, default_limit: int) -> None:
        self.default_limit = default_limit

    @abstractmethod
    async def acquire(self, account_id: str, model: str, limit: int | None) -> str:
        """Take a slot or raise RateLimited; returns the slot's token for `release`."""

    @abstractmethod
    async def release(self, account_id: str, model: str, slot: str) -> None: ...

    async def start(self) -> None:  # noqa: B027
        pass

    async def close(self) -> None:  # noqa: B027
        pass


class InProcessLimiter(ConcurrencyLimiter):
    local = True

    def __init__(self, default_limit: int) -> None:
        super().__init__(default_limit)
        self._in_flight: defaultdict[tuple[str, str], int] = defaultdict(int)

    async def acquire(self, account_id: str, model: str, limit: int | None) -> str:
        key = (account_id, model)
        if self._in_flight[key] >= (limit or self.default_limit):
            raise RateLimited("Rate limited")
        self._in_flight[key] += 1
        return ""

    async def release(self, account_id: str, model: str, slot: str) -> None:
        self.release_nowait(account_id, model)

    def release_nowait(self, account_id: str, model: str) -> None:
        key = (account_id, model)
        remaining = self._in_flight[key] - 1
        if remaining > 0:
            self._in_flight[key] = remaining
        else:
            self._in_flight.pop(key, None)
