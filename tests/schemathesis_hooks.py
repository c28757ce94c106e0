"""schemathesis hooks for tests/test_schemathesis.py: half the generated requests name a served
model of the task the operation (or, on the native route, the generated body) fits, so they
reach real inference instead of the 404 a random name gets. INFERD_ST_MODELS lists the served
models as `name=task`, comma-separated. The choice hashes the generated case, so a seed
still replays the same run."""

from __future__ import annotations

import os
import zlib
from typing import Any

import schemathesis
from pydantic import BaseModel, ValidationError

from inferd.api.native.protocol import EmbeddingsRequest, TextGenerationRequest
from inferd.api.native.task_protocol import TASKS

SERVED = dict(
    item.split("=", 1) for item in os.environ.get("INFERD_ST_MODELS", "").split(",") if item
)
NATIVE = "/v1/inference/{model}"
# The task each OpenAI route serves; other routes with a `model` take any model.
ROUTE_TASKS = {
    "/v1/openai/chat/completions": "text-generation",
    "/v1/openai/completions": "text-generation",
    "/v1/openai/embeddings": "embeddings",
    "/v1/openai/audio/speech": "text-to-speech",
    "/v1/openai/audio/transcriptions": "automatic-speech-recognition",
    "/v1/openai/images/generations": "text-to-image",
}
NATIVE_BODIES: dict[str, type[BaseModel]] = {
    "text-generation": TextGenerationRequest,
    "embeddings": EmbeddingsRequest,
    **{task: model for task, (model, _) in TASKS.items()},
}


def _fits(model: type[BaseModel], body: Any) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def _tasks(case: Any) -> set[str]:
    path = case.operation.path
    if path == NATIVE:
        return {task for task, model in NATIVE_BODIES.items() if _fits(model, case.body)}
    if path in ROUTE_TASKS:
        return {ROUTE_TASKS[path]}
    return set(SERVED.values())


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    in_path = "model" in (case.path_parameters or {})
    in_body = isinstance(case.body, dict) and "model" in case.body
    if not (in_path or in_body):
        return case
    tasks = _tasks(case)
    models = sorted(name for name, task in SERVED.items() if task in tasks)
    pick = zlib.crc32(repr((case.path_parameters, case.body)).encode())
    if not models or pick % 2:
        return case
    model = models[(pick >> 1) % len(models)]
    if in_path:
        case.path_parameters = {**case.path_parameters, "model": model}
    else:
        case.body = {**case.body, "model": model}
    return case
