"""Routes of the native API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferd.api.errors import APIError
from inferd.api.model_cards import model_card
from inferd.api.native.serving import infer
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound


async def inference(request: Request) -> Response:
    return await infer(request.app.state.gateway, request, request.path_params["model"])


async def list_models(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    return JSONResponse([model_card(gateway, spec) for spec in gateway.catalog])


async def get_model(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    try:
        return JSONResponse(
            model_card(gateway, gateway.catalog.resolve(request.path_params["model"]))
        )
    except ModelNotFound as exc:
        raise APIError(404, str(exc), code="model_not_found", param="model") from None


routes = [
    Route("/v1/inference/{model:path}", inference, methods=["POST"]),
    Route("/models/list", list_models, methods=["GET"]),
    Route("/models/{model:path}", get_model, methods=["GET"]),
]
