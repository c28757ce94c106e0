"""ASGI middleware: one metadata-only access log line and the request metrics per request,
written when the last byte is sent (so streams are measured to their end)."""

from __future__ import annotations

import logging
import time

from inferd import metrics
from inferd.serving import RequestMeta

log = logging.getLogger("inferd.access")

SKIP_LOG = frozenset({"/healthz", "/readyz", "/metrics"})
_NO_META = RequestMeta()  # routes that serve no model


class AccessLogMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status_holder = [500]
        logged = [False]

        def finish() -> None:
            if logged[0]:
                return
            logged[0] = True
            duration = time.perf_counter() - started
            meta: RequestMeta = state.get("meta") or _NO_META
            route = meta.route
            model = meta.model or ""
            status = status_holder[0]
            metrics.request_counter(route, model, str(status)).inc()
            metrics.latency_histogram(route).observe(duration)
            if scope["path"] in SKIP_LOG or not log.isEnabledFor(logging.INFO):
                return
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "route": route,
                    "model": model or None,
                    "account": meta.account,
                    "request_id": meta.request_id,
                    "prompt_tokens": meta.prompt_tokens,
                    "completion_tokens": meta.completion_tokens,
                    "cost": meta.cost,
                    "finish_reason": meta.finish_reason,
                },
            )

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()
