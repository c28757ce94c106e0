"""One request in flight on a replica, seen from the gateway."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from inferd.requests import TERMINAL, Event, Failed

WORKER_LOST = Failed(
    status=503,
    code="worker_crashed",
    message="The model worker stopped unexpectedly while serving this request; retry it.",
)


class ModelUnavailable(Exception):
    """No replica could take the request in time (503)."""


class Call:
    """Events arrive through `deliver` (on the event loop) and are consumed by one reader.

    A deque plus one waiter future: lighter than asyncio.Queue on the per-request hot path.
    """

    __slots__ = ("_cancel", "_events", "_waiter", "finished", "id")

    def __init__(self, call_id: str, cancel: Callable[[Call], None]) -> None:
        self.id = call_id
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._cancel = cancel
        self.finished = False

    def deliver(self, event: Event) -> None:
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Event:
        """The next event; after a terminal one (done, result, error) there is none."""
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, TERMINAL):
            self.finished = True
        return event

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next()
            yield event
            if self.finished:
                return

    async def result(self) -> Event:
        """Wait for the terminal event of a unary call."""
        while True:
            event = await self.next()
            if self.finished:
                return event

    def close(self) -> None:
        """Tell the worker to stop if the request has not finished (client went away)."""
        if not self.finished:
            self.finished = True
            self._cancel(self)
