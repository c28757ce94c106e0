"""Wire models of the routes API. A provider's API key is write-only: never in a response."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TargetPrice(_Body):
    input_per_1m: float = Field(default=0.0, ge=0, le=1e6)
    output_per_1m: float = Field(default=0.0, ge=0, le=1e6)
    per_request: float = Field(default=0.0, ge=0, le=1e3)


class TargetIn(_Body):
    model: str = Field(
        min_length=1,
        max_length=300,
        description="A model served here, or (with `base_url`) the provider's model name.",
    )
    base_url: str | None = Field(
        default=None,
        max_length=2000,
        description="An OpenAI-compatible provider's base URL, e.g. `https://api.example.com/v1` "
        "(operator only); unset: the model is served here.",
    )
    api_key: str | None = Field(
        default=None,
        max_length=4096,
        description="The provider's API key: stored encrypted, never returned. On a replace, "
        'omit it to keep the key of the same target (same base_url and model); `""` removes it.',
    )
    weight: float = Field(default=1.0, gt=0, le=1e6, description="Share under `weighted`.")
    zero_retention: bool = Field(
        default=False, description="The provider keeps no prompts or outputs (your contract)."
    )
    price: TargetPrice | None = Field(
        default=None,
        description="What a request this provider serves is billed (per 1M tokens); models "
        "served here are billed by their own price.",
    )


class RouteIn(_Body):
    name: str = Field(
        min_length=1,
        max_length=300,
        description="The model name clients send. Yours start with your owner prefix "
        "(`your-account/...`); any other name is the operator's.",
    )
    targets: list[TargetIn] = Field(min_length=1, max_length=16)
    policy: Literal["ordered", "weighted", "cheapest", "fastest"] = Field(
        default="ordered",
        description="`ordered`: first healthy; `weighted`: random by weight; `cheapest`: by "
        "price; `fastest`: by measured p50 time to first output. Fallbacks follow the order.",
    )
    task: Literal["text-generation", "embeddings"] | None = Field(
        default=None,
        description="What the route serves; taken from its models here, else text-generation.",
    )
    zero_retention: bool = Field(
        default=False,
        description="Never send this route's requests to a provider not marked zero_retention.",
    )
    deprecated_at: datetime | None = Field(
        default=None,
        description="A deprecation (operator only): `name` is a built-in model, served from this "
        "moment by the one target, a built-in model of the same task.",
    )


class RouteReplace(RouteIn):
    name: str | None = Field(  # type: ignore[assignment]
        default=None, max_length=300, description="The path's name, if given."
    )


# -- responses --------------------------------------------------------------------------------


class PriceOut(TypedDict):
    input_per_1m: float
    output_per_1m: float
    per_request: float


class TargetOut(TypedDict):
    model: str
    base_url: str | None
    has_api_key: bool
    weight: float
    zero_retention: bool
    price: PriceOut


class RouteObject(TypedDict):
    object: Literal["route"]
    name: str
    public: bool
    source: Literal["api", "config"]
    task: str
    policy: str
    zero_retention: bool
    deprecated_at: str | None
    targets: list[TargetOut]
    created_at: str | None
    updated_at: str | None


class RouteList(TypedDict):
    object: Literal["list"]
    data: list[RouteObject]


class TargetHealthOut(TypedDict):
    model: str
    base_url: str | None
    served_by: str  # what X-Inferd-Served-By names for it
    state: Literal["healthy", "cooling_down", "half_open"]
    failures: int
    cooldown_until: str | None
    last_error: str | None
    p50_ms: float | None
    samples: int
    skipped: NotRequired[str]  # why requests of the caller never reach it


class RouteHealth(TypedDict):
    name: str
    policy: str
    targets: list[TargetHealthOut]
