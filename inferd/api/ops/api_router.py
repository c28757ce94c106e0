"""GET /healthz, /readyz, /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferd.api.responses import JSONResponse
from inferd.metrics import REGISTRY


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = request.app.state.gateway
    models = {name: d.ready for name, d in gateway.runtime.deployments.items()}
    ready = all(models.values()) and not gateway.draining
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "draining": gateway.draining,
            "models": models,
        },
        status_code=200 if ready else 503,
    )


async def metrics(_: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
