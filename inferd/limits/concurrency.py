"""In-process concurrency limiter. A slot is taken before work starts and released on every
exit path by the caller's `finally` (success, error, disconnect, worker crash)."""

from __future__ import annotations

from collections import defaultdict


class RateLimited(Exception):
    pass


class ConcurrencyLimiter:
    def __init__(self, default_limit: int) -> None:
        self.default_limit = default_limit
        self._in_flight: defaultdict[tuple[str, str], int] = defaultdict(int)

    def acquire(self, account_id: str, model: str, limit: int | None = None) -> None:
        key = (account_id, model)
        if self._in_flight[key] >= (limit or self.default_limit):
            raise RateLimited("Rate limited")
        self._in_flight[key] += 1

    def release(self, account_id: str, model: str) -> None:
        key = (account_id, model)
        remaining = self._in_flight[key] - 1
        if remaining > 0:
            self._in_flight[key] = remaining
        else:
            self._in_flight.pop(key, None)

    def in_flight(self, account_id: str, model: str) -> int:
        return self._in_flight.get((account_id, model), 0)
