"""Requests a job runs later (a webhook's, a batch line), replayed through exactly the code an
HTTP call runs: an ASGI request built from the stored body, whose scope carries the caller as
authenticated at submit and the request id the client was given (`Gateway.principal` and
`Gateway.meta` read them; no HTTP request can set the scope's state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.dispatch import render_exception
from inferd.api.gateway import Gateway
from inferd.auth import Principal
from inferd.auth.authenticator import JwtScope

REPLAY = "replay"  # scope state flag: this request is a job's replay

Handler = Callable[[Request], Awaitable[Response]]


def is_replay(request: Request) -> bool:
    return bool(request.scope.get("state", {}).get(REPLAY))


async def replay(
    handler: Handler,
    path: str,
    content_type: str,
    body: bytes,
    principal: Principal,
    request_id: str,
    **state: Any,
) -> Response:
    """The response `handler` gives the stored request; errors rendered as the API renders
    them."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Future()  # nobody disconnects from a job: wait until cancelled
        raise AssertionError

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
        "state": {"principal": principal, "request_id": request_id, REPLAY: True, **state},
    }
    try:
        return await handler(Request(scope, receive))
    except Exception as exc:
        return render_exception(exc, path)


async def current_principal(gateway: Gateway, stored: dict[str, Any]) -> Principal:
    """The stored caller under its account's limits as they are now."""
    return await gateway.auth.current(principal_from(stored))


def principal_from(raw: dict[str, Any]) -> Principal:
    """A principal stored as a dict (dataclasses.asdict) at submit."""
    jwt = raw.get("jwt")
    if jwt is not None:
        models = jwt.get("models")
        jwt = JwtScope(**{**jwt, "models": tuple(models) if models is not None else None})
    return Principal(**{**raw, "jwt": jwt})
