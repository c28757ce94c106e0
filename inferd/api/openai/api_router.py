"""Routes of the OpenAI-compatible API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferd.api.errors import APIError
from inferd.api.model_cards import openai_model
from inferd.api.openai.serving_audio import create_speech, create_transcription
from inferd.api.openai.serving_chat import create_chat_completion
from inferd.api.openai.serving_completions import create_completion
from inferd.api.openai.serving_embeddings import create_embeddings
from inferd.api.openai.serving_images import create_image
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound

PREFIX = "/v1/openai"


async def chat_completions(request: Request) -> Response:
    return await create_chat_completion(request.app.state.gateway, request)


async def completions(request: Request) -> Response:
    return await create_completion(request.app.state.gateway, request)


async def embeddings(request: Request) -> Response:
    return await create_embeddings(request.app.state.gateway, request)


async def transcriptions(request: Request) -> Response:
    return await create_transcription(request.app.state.gateway, request)


async def speech(request: Request) -> Response:
    return await create_speech(request.app.state.gateway, request)


async def image_generations(request: Request) -> Response:
    return await create_image(request.app.state.gateway, request)


async def list_models(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    return JSONResponse(
        {"object": "list", "data": [openai_model(gateway, spec) for spec in gateway.catalog]}
    )


async def get_model(request: Request) -> Response:
    gateway = request.app.state.gateway
    await gateway.auth.authenticate(request.headers.get("authorization"))
    model = request.path_params["model"]
    try:
        return JSONResponse(openai_model(gateway, gateway.catalog.resolve(model)))
    except ModelNotFound as exc:
        raise APIError(404, str(exc), code="model_not_found", param="model") from None


routes = [
    Route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{PREFIX}/completions", completions, methods=["POST"]),
    Route(f"{PREFIX}/embeddings", embeddings, methods=["POST"]),
    Route(f"{PREFIX}/audio/transcriptions", transcriptions, methods=["POST"]),
    Route(f"{PREFIX}/audio/speech", speech, methods=["POST"]),
    Route(f"{PREFIX}/images/generations", image_generations, methods=["POST"]),
    Route(f"{PREFIX}/models", list_models, methods=["GET"]),
    Route(f"{PREFIX}/models/{{model:path}}", get_model, methods=["GET"]),
]
