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


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        # 499: nginx's "client closed request"; nobody reads it, the access log does.
        raise APIError(499, "The client closed the connection.", code="client_closed")
    return task.result()
