"""One request in flight on a replica, seen from the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

TERMINAL = frozenset({"done", "result", "error"})

WORKER_LOST = {
    "ev": "error",
    "status": 503,
    "code": "worker_crashed",
    "message": "The model worker stopped unexpectedly while serving this request; retry it.",
}


class ModelUnavailable(Exception):
    """No replica could take the request in time (503)."""


class Call:
    __slots__ = ("_cancel", "_queue", "finished", "id")

    def __init__(self, call_id: str, cancel: Callable[[Call], None]) -> None:
        self.id = call_id
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._cancel = cancel
        self.finished = False

    def deliver(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self._queue.get()
            if event["ev"] in TERMINAL:
                self.finished = True
                yield event
                return
            yield event

    async def result(self) -> dict[str, Any]:
        """Wait for the terminal event of a unary call."""
        async for event in self:
            if event["ev"] in TERMINAL:
                return event
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Tell the worker to stop if the request has not finished (client went away)."""
        if not self.finished:
            self.finished = True
            self._cancel(self)
