"""Wire shapes shared by every API: the error body, the model card, the sampling seed.

Response shapes are TypedDicts: renderers build them as plain dicts (no per-request model
instances), and the OpenAPI document derives their schemas from the same classes.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

from pydantic import AfterValidator, Field

# pydantic reads TypedDicts only from typing_extensions before Python 3.12.
from typing_extensions import TypedDict


class ErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(TypedDict):
    """OpenAI's error shape on every route; native clients read `detail`."""

    error: ErrorDetail
    detail: str


class ModelCard(TypedDict):
    """A served model (`GET /models/{model}`; `metadata` of OpenAI's model object)."""

    model_name: str
    task: str
    type: str
    tags: list[str]
    description: str
    context_length: int
    max_output_tokens: int | None
    pricing: dict[str, float]
    replicas: int
    ready: bool
    dimensions: NotRequired[int]
    deploy_id: NotRequired[str]  # an account's deployed version
    version: NotRequired[int]
    deprecated_at: NotRequired[str]  # ISO 8601; after it, `replacement` serves the requests
    replacement: NotRequired[str]
    route_targets: NotRequired[list[str]]  # a route: what may serve it, in its policy's order


def _fold_seed(value: int) -> int:
    return value % 2**63


# OpenAI takes any int64 seed; samplers take non-negative ones, and `seed + i` (one per choice)
# must stay inside 64 bits: negative seeds fold into [0, 2**63).
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), AfterValidator(_fold_seed)]
