"""Routes of the native API."""

from __future__ import annotations

from typing import Any, Union

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.endpoint import FORM, INFERENCE_ERRORS, JSON, SSE, Endpoint, Events, Reply
from inferd.api.errors import APIError
from inferd.api.model_cards import model_card, route_card
from inferd.api.native.protocol import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    TextGenerationRequest,
    TextGenerationResponse,
    TextGenerationStreamEvent,
)
from inferd.api.native.serving import infer
from inferd.api.native.task_protocol import TASK_RESPONSES, TASKS
from inferd.api.protocol import ErrorResponse, ModelCard
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound

MODEL_PARAM = {"model": "A served model's name (it may contain `/`)."}
# The model's task picks the body; the document lists every task's (text generation first).
_requests: list[Any] = [TextGenerationRequest, EmbeddingsRequest]
_requests += [request for request, _ in TASKS.values() if request not in _requests]
InferenceRequest = Union[tuple(_requests)]  # type: ignore[valid-type]  # noqa: UP007
InferenceResponse = Union[  # type: ignore[valid-type]  # noqa: UP007
    tuple([TextGenerationResponse, EmbeddingsResponse, *TASK_RESPONSES.values()])
]


async def inference(request: Request) -> Response:
    """Run a model

    The body depends on the model's task (`GET /models/{model}` tells it): text generation,
    embeddings, or one of the tasks in docs/tasks.md. JSON, or multipart/form-data with binary
    fields (images, audio) as file parts; JSON takes them as data URLs or http(s) URLs. Text
    generation with `stream: true` answers with server-sent events, one per token.
    """
    return await infer(request.app.state.gateway, request, request.path_params["model"])


async def list_models(request: Request) -> Response:
    """List the served models"""
    gateway = request.app.state.gateway
    principal = await gateway.principal(request)
    catalog = gateway.catalog
    cards = [model_card(gateway, spec) for spec in catalog.visible(principal.account_id)]
    routes = catalog.visible_routes(principal.account_id)
    cards += [route_card(gateway, r) for r in routes if principal.allows(r.name)]
    return JSONResponse(cards)


async def get_model(request: Request) -> Response:
    """Describe a served model"""
    gateway = request.app.state.gateway
    principal = await gateway.principal(request)
    model = request.path_params["model"]
    try:
        return JSONResponse(
            model_card(gateway, gateway.catalog.resolve(model, principal.account_id))
        )
    except ModelNotFound as exc:
        route = gateway.catalog.route(model, principal.account_id)
        if route is not None:
            return JSONResponse(route_card(gateway, route))
        raise APIError(404, str(exc), code="model_not_found", param="model") from None


routes = [
    Endpoint(
        "/v1/inference/{model:path}",
        inference,
        "POST",
        params=MODEL_PARAM,
        body={JSON: InferenceRequest, FORM: InferenceRequest},
        responses={
            200: Reply(
                "The task's output with `request_id` and `inference_status`; for streamed "
                "text generation, one event per token.",
                {JSON: InferenceResponse, SSE: Events(TextGenerationStreamEvent | ErrorResponse)},
            )
        },
        errors=(*INFERENCE_ERRORS, 415),
    ),
    Endpoint(
        "/models/list",
        list_models,
        "GET",
        responses={200: Reply("Every served model.", {JSON: list[ModelCard]})},
    ),
    Endpoint(
        "/models/{model:path}",
        get_model,
        "GET",
        params=MODEL_PARAM,
        responses={200: Reply("The model's card.", {JSON: ModelCard})},
        errors=(404,),
    ),
]
