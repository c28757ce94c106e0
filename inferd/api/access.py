"""One metadata-only access log line and the request metrics per request, written when the
last byte is sent (so streams are measured to their end); and the headers every route adds
from what the request path noted (a deprecated model), on the response's first message."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd import metrics
from inferd.serving import RequestMeta

log = logging.getLogger("inferd.access")

SKIP_LOG = frozenset({"/healthz", "/readyz", "/metrics"})
_NO_META = RequestMeta()  # routes that serve no model


class _Exchange:
    """One request's response as it is sent: its status, and the log line once it ends."""

    __slots__ = ("done", "scope", "send_raw", "started", "status")

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope = scope
        self.send_raw = send
        self.started = time.perf_counter()
        self.status = 500
        self.done = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            meta = self.scope["state"].get("meta")
            if meta is not None and meta.request_id is not None:
                # An admitted request's id, as OpenAI sends it: the usage row and logs name it.
                request_id = (b"x-request-id", meta.request_id.encode())
                message = {**message, "headers": [*message.get("headers", ()), request_id]}
            if meta is not None and meta.deprecation is not None:
                extra = deprecation_headers(*meta.deprecation, meta.served_by)
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif meta is not None and meta.routed_as is not None and meta.served_by:
                # A route: the target that served (a model here, or `model@provider-host`).
                served = (b"x-inferd-served-by", meta.served_by.encode())
                message = {**message, "headers": [*message.get("headers", ()), served]}
        await self.send_raw(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        duration = time.perf_counter() - self.started
        scope = self.scope
        meta: RequestMeta = scope["state"].get("meta") or _NO_META
        route = meta.route
        metrics.request_counter(route, meta.label or "", str(self.status)).inc()
        metrics.latency_histogram(route).observe(duration)
        if scope["path"] in SKIP_LOG or not log.isEnabledFor(logging.INFO):
            return
        log.info("request", extra=_fields(scope, self.status, duration, meta))


@lru_cache(maxsize=256)
def deprecation_headers(
    at: datetime, replacement: str, served_by: str | None
) -> tuple[tuple[bytes, bytes], ...]:
    """`Deprecation` (RFC 9745: a structured-field date), `Sunset` (RFC 8594: an HTTP-date),
    the successor's model card, and past the date the model that served."""
    headers = [
        (b"deprecation", f"@{int(at.timestamp())}".encode()),
        (b"sunset", format_datetime(at, usegmt=True).encode()),
        (b"link", f'</models/{quote(replacement)}>; rel="successor-version"'.encode()),
    ]
    if served_by is not None:
        headers.append((b"x-inferd-served-by", served_by.encode()))
    return tuple(headers)


def _fields(scope: Scope, status: int, duration: float, meta: RequestMeta) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(duration * 1000, 2),
        "route": meta.route,
        "model": meta.model or None,
        "account": meta.account,
        "request_id": meta.request_id,
        "prompt_tokens": meta.prompt_tokens,
        "completion_tokens": meta.completion_tokens,
        "cost": meta.cost,
        "finish_reason": meta.finish_reason,
        "served_by": meta.served_by,
    }


async def access_logged(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app` for one HTTP request; routes put their `RequestMeta` in scope["state"]."""
    if "state" not in scope:
        scope["state"] = {}
    exchange = _Exchange(scope, send)
    try:
        await app(scope, receive, exchange.send)
    finally:
        exchange.finish()
