"""Stop work for clients that went away before a non-streaming response was ready.

Streaming responses are cancelled by Starlette on disconnect; a plain handler is not, so it
would keep generating (and hold its concurrency slot) for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from inferd.api.errors import APIError

T = TypeVar("T")

WATCH_AFTER_S = 0.05


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; a watcher cancels it if the client disconnects first.

    The watcher starts only if the work outlives WATCH_AFTER_S: most requests finish sooner
    and never pay for a second task.
    """
    this = asyncio.current_task()
    assert this is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await _wait_disconnect(request)
        gone = True
        this.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            # 499: nginx's "client closed request"; nobody reads it, the access log does.
            raise APIError(499, "The client closed the connection.", code="client_closed") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
