"""GET /healthz, /readyz, /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.endpoint import JSON, TEXT, Endpoint, Reply
from inferd.api.ops.protocol import Health, Readiness
from inferd.api.responses import JSONResponse
from inferd.metrics import REGISTRY


async def healthz(_: Request) -> Response:
    """Liveness: the process answers"""
    body: Health = {"status": "ok"}
    return JSONResponse(body)


async def readyz(request: Request) -> Response:
    """Readiness: every model is up and the server is not draining"""
    gateway = request.app.state.gateway
    # Built-in models only: an account's deployment may be stopped or scaled to zero.
    models = {spec.name: gateway.runtime.deployments[spec.key].ready for spec in gateway.catalog}
    ready = all(models.values()) and not gateway.draining
    body: Readiness = {
        "status": "ready" if ready else "not_ready",
        "draining": gateway.draining,
        "models": models,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(_: Request) -> Response:
    """Prometheus metrics"""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [
    Endpoint(
        "/healthz", healthz, "GET", auth=False, responses={200: Reply("Alive.", {JSON: Health})}
    ),
    Endpoint(
        "/readyz",
        readyz,
        "GET",
        auth=False,
        responses={
            200: Reply("Ready.", {JSON: Readiness}),
            503: Reply("Not ready: a model is starting or the server drains.", {JSON: Readiness}),
        },
    ),
    Endpoint(
        "/metrics",
        metrics,
        "GET",
        auth=False,
        responses={200: Reply("The Prometheus text format.", {TEXT: str})},
    ),
]
