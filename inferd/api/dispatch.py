"""The ASGI entry: API endpoints are found by path and called directly; everything else (the
docs, unknown paths, wrong methods, lifespan) goes through Starlette.

Starlette's layers around a route (server-error and exception middleware, the router's scan of
every route's regex, a per-route exception wrapper) cost about 20 µs per request, an eighth
of what the gateway spends on a whole null-model call. Endpoints are indexed once: exact paths
in a dict, parameterised paths by their literal prefix.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from inferd.api.access import access_logged
from inferd.api.endpoint import Endpoint
from inferd.api.errors import error_response
from inferd.auth import AuthError
from inferd.serving import RequestError

log = logging.getLogger("inferd.app")

HTTP_MESSAGES = {404: "No such endpoint.", 405: "Method not allowed on this endpoint."}


def render_exception(exc: Exception, path: str) -> Response:
    """The error response for an exception a handler raised (every API route, both paths)."""
    if isinstance(exc, RequestError):
        return error_response(exc)
    if isinstance(exc, AuthError):
        status = getattr(exc, "status", 401)
        code = "store_unavailable" if status == 503 else "invalid_api_key"
        return error_response(RequestError(status, str(exc), code=code))
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or _unreachable(exc)):
        # The database is away (a restart, a failover): retry, not a server bug.
        log.warning("database unavailable", extra={"path": path, "error": type(exc).__name__})
        return error_response(
            RequestError(503, "The database is unavailable; retry.", code="store_unavailable")
        )
    if isinstance(exc, HTTPException):
        message = HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
        return error_response(RequestError(exc.status_code, message))
    log.error("unhandled error", extra={"path": path, "error": type(exc).__name__})
    return error_response(RequestError(500, "Internal error.", code="internal_error"))


def _unreachable(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


class Dispatcher:
    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._exact: dict[str, list[Endpoint]] = {}
        self._prefixed: list[tuple[str, Endpoint]] = []
        # `/prefix/{name:path}` routes: the parameter is the rest of the path, no regex.
        self._tails: list[tuple[str, str, Endpoint]] = []
        for route in app.routes:
            if not isinstance(route, Endpoint):
                continue
            convertors = route.param_convertors
            prefix = route.path_format.split("{", 1)[0]
            if not convertors:
                self._exact.setdefault(route.path, []).append(route)
            elif (
                len(convertors) == 1
                and route.path.endswith(":path}")
                and route.path.count("{") == 1
                and not self._tails_shadowed(prefix)
            ):
                (name,) = convertors
                self._tails.append((prefix, name, route))
            else:
                self._prefixed.append((prefix, route))

    # What callers of the Starlette app use (uvicorn, tests).
    @property
    def state(self) -> Any:
        return self.app.state

    @property
    def routes(self) -> list[Any]:
        return self.app.routes

    def _tails_shadowed(self, prefix: str) -> bool:
        """A parameterised route declared earlier under the same prefix takes precedence."""
        return any(p.startswith(prefix) or prefix.startswith(p) for p, _ in self._prefixed)

    def _find(self, scope: Scope) -> Endpoint | None:
        path, method = scope["path"], scope["method"]
        for route in self._exact.get(path, ()):
            if method in route.methods:  # type: ignore[operator]
                return route
        for prefix, name, route in self._tails:
            if path.startswith(prefix) and len(path) > len(prefix) and method in route.methods:  # type: ignore[operator]
                scope["path_params"] = {name: path[len(prefix) :]}
                scope["endpoint"] = route.endpoint
                return route
        for prefix, route in self._prefixed:
            if path.startswith(prefix):
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._find(scope)
        if route is None:
            await access_logged(self.app, scope, receive, send)
            return
        scope["app"] = self.app
        await access_logged(_Call(route), scope, receive, send)


class _Call:
    """One endpoint as an ASGI app, with the app's error rendering. An error inside a stream
    (after the status was sent) propagates to the server, as under Starlette."""

    __slots__ = ("route",)

    def __init__(self, route: Endpoint) -> None:
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.route.endpoint(Request(scope, receive))
        except Exception as exc:
            response = render_exception(exc, scope["path"])
        await response(scope, receive, send)
