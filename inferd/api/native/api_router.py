"""Routes of the native API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.model_cards import model_card
from inferd.api.native.serving import infer
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound

router = APIRouter()


@router.post("/v1/inference/{model:path}")
async def inference(model: str, request: Request) -> Response:
    return await infer(request.app.state.gateway, request, model)


@router.get("/models/list")
async def list_models(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    return JSONResponse([model_card(gateway, spec) for spec in gateway.catalog])


@router.get("/models/{model:path}")
async def get_model(model: str, request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    try:
        return JSONResponse(model_card(gateway, gateway.catalog.resolve(model)))
    except ModelNotFound as exc:
        raise APIError(404, str(exc), code="model_not_found", param="model") from None
