"""Routes of the OpenAI-compatible API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.model_cards import openai_model
from inferd.api.openai.serving_chat import create_chat_completion
from inferd.api.openai.serving_completions import create_completion
from inferd.api.openai.serving_embeddings import create_embeddings
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound

router = APIRouter(prefix="/v1/openai")


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await create_chat_completion(request.app.state.gateway, request)


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await create_completion(request.app.state.gateway, request)


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    return await create_embeddings(request.app.state.gateway, request)


@router.get("/models")
async def list_models(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    return JSONResponse(
        {"object": "list", "data": [openai_model(gateway, spec) for spec in gateway.catalog]}
    )


@router.get("/models/{model:path}")
async def get_model(model: str, request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    try:
        return JSONResponse(openai_model(gateway, gateway.catalog.resolve(model)))
    except ModelNotFound as exc:
        raise APIError(404, str(exc), code="model_not_found", param="model") from None
