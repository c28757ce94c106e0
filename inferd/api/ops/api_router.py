"""GET /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from inferd.api.responses import JSONResponse
from inferd.metrics import REGISTRY

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
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


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
