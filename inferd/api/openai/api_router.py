"""Routes of the OpenAI-compatible API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.endpoint import FORM, INFERENCE_ERRORS, JSON, SSE, TEXT, Endpoint, Events, Reply
from inferd.api.errors import APIError
from inferd.api.model_cards import openai_model, openai_route
from inferd.api.openai.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    CreateEmbeddingResponse,
    EmbeddingRequest,
    ImageGenerationRequest,
    ImagesResponse,
    Model,
    ModelList,
    SpeechRequest,
    Transcription,
    TranscriptionRequest,
    TranscriptionVerbose,
)
from inferd.api.openai.serving_audio import create_speech, create_transcription
from inferd.api.openai.serving_chat import create_chat_completion
from inferd.api.openai.serving_completions import create_completion
from inferd.api.openai.serving_embeddings import create_embeddings
from inferd.api.openai.serving_images import create_image
from inferd.api.protocol import ErrorResponse
from inferd.api.responses import JSONResponse
from inferd.catalog import ModelNotFound

PREFIX = "/v1/openai"
MODEL_PARAM = {"model": "A served model's name (it may contain `/`)."}


async def chat_completions(request: Request) -> Response:
    """Create a chat completion

    Text, tools, JSON mode and structured output, log probabilities, `n` choices and images
    (`image_url` parts, on vision models). With `stream: true` the body is server-sent events.
    """
    return await create_chat_completion(request.app.state.gateway, request)


async def completions(request: Request) -> Response:
    """Create a completion (legacy)"""
    return await create_completion(request.app.state.gateway, request)


async def embeddings(request: Request) -> Response:
    """Create embeddings"""
    return await create_embeddings(request.app.state.gateway, request)


async def transcriptions(request: Request) -> Response:
    """Transcribe audio

    multipart/form-data with the audio in `file`, as OpenAI's; a JSON body may give `file` as
    a data URL or an http(s) URL.
    """
    return await create_transcription(request.app.state.gateway, request)


async def speech(request: Request) -> Response:
    """Synthesize speech; the body is the audio"""
    return await create_speech(request.app.state.gateway, request)


async def image_generations(request: Request) -> Response:
    """Generate images"""
    return await create_image(request.app.state.gateway, request)


async def list_models(request: Request) -> Response:
    """List the served models"""
    gateway = request.app.state.gateway
    principal = await gateway.principal(request)
    catalog = gateway.catalog
    models = [openai_model(gateway, spec) for spec in catalog.visible(principal.account_id)]
    routes = catalog.visible_routes(principal.account_id)
    models += [openai_route(gateway, r) for r in routes if principal.allows(r.name)]
    return JSONResponse({"object": "list", "data": models})


async def get_model(request: Request) -> Response:
    """Describe a served model"""
    gateway = request.app.state.gateway
    principal = await gateway.principal(request)
    model = request.path_params["model"]
    try:
        spec = gateway.catalog.resolve(model, principal.account_id)
        return JSONResponse(openai_model(gateway, spec))
    except ModelNotFound as exc:
        route = gateway.catalog.route(model, principal.account_id)
        if route is not None:
            return JSONResponse(openai_route(gateway, route))
        raise APIError(404, str(exc), code="model_not_found", param="model") from None


routes = [
    Endpoint(
        f"{PREFIX}/chat/completions",
        chat_completions,
        "POST",
        body={JSON: ChatCompletionRequest},
        responses={
            200: Reply(
                "The completion; with `stream: true`, chunks as server-sent events, then "
                "`data: [DONE]` (an error after the stream started arrives as an error event).",
                {JSON: ChatCompletion, SSE: Events(ChatCompletionChunk | ErrorResponse, "[DONE]")},
            )
        },
        errors=(*INFERENCE_ERRORS, 415),
    ),
    Endpoint(
        f"{PREFIX}/completions",
        completions,
        "POST",
        body={JSON: CompletionRequest},
        responses={
            200: Reply(
                "The completion; with `stream: true`, chunks as server-sent events, then "
                "`data: [DONE]`.",
                {JSON: Completion, SSE: Events(Completion | ErrorResponse, "[DONE]")},
            )
        },
        errors=INFERENCE_ERRORS,
    ),
    Endpoint(
        f"{PREFIX}/embeddings",
        embeddings,
        "POST",
        body={JSON: EmbeddingRequest},
        responses={200: Reply("One vector per input, in order.", {JSON: CreateEmbeddingResponse})},
        errors=INFERENCE_ERRORS,
    ),
    Endpoint(
        f"{PREFIX}/audio/transcriptions",
        transcriptions,
        "POST",
        body={FORM: TranscriptionRequest, JSON: TranscriptionRequest},
        responses={
            200: Reply(
                "The transcript: JSON for `json` and `verbose_json`, text for `text`, `srt` "
                "and `vtt`.",
                {JSON: Transcription | TranscriptionVerbose, TEXT: str},
            )
        },
        errors=(*INFERENCE_ERRORS, 415),
    ),
    Endpoint(
        f"{PREFIX}/audio/speech",
        speech,
        "POST",
        body={JSON: SpeechRequest},
        responses={200: Reply("The audio.", {"audio/mpeg": bytes, "audio/wav": bytes})},
        errors=INFERENCE_ERRORS,
    ),
    Endpoint(
        f"{PREFIX}/images/generations",
        image_generations,
        "POST",
        body={JSON: ImageGenerationRequest},
        responses={200: Reply("The images, as URLs or base64 PNG.", {JSON: ImagesResponse})},
        errors=INFERENCE_ERRORS,
    ),
    Endpoint(
        f"{PREFIX}/models",
        list_models,
        "GET",
        responses={200: Reply("Every served model.", {JSON: ModelList})},
    ),
    Endpoint(
        f"{PREFIX}/models/{{model:path}}",
        get_model,
        "GET",
        params=MODEL_PARAM,
        responses={200: Reply("The model.", {JSON: Model})},
        errors=(404,),
    ),
]
