"""Native request bodies, per task."""

from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from inferd.api.protocol import Seed


class TextGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str
    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: Seed | None = None
    ignore_eos: bool = False  # extension: generate exactly max_new_tokens
    stream: bool = False
    details: bool = False  # non-streaming: per-token ids, texts and logprobs (TGI's `details`)
    top_logprobs: int = Field(default=0, ge=0, le=20)
    response_format: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        return [s for s in stops if s]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: list[str] = Field(min_length=1)
    normalize: bool = False

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not v for v in value):
            raise ValueError("inputs must not contain empty strings")
        return value


# -- response bodies (TypedDicts: renderers build plain dicts; the OpenAPI schema reads these) --


class InferenceStatus(TypedDict):
    status: Literal["succeeded"]
    runtime_ms: int
    cost: float
    tokens_input: NotRequired[int]
    tokens_generated: NotRequired[int]


class GeneratedText(TypedDict):
    generated_text: str


class TopToken(TypedDict):
    id: int
    text: str
    logprob: float


class Token(TypedDict):
    id: int | None  # None only on a stream's closing event when no token ended the text
    text: str
    logprob: float | None
    special: bool
    top_tokens: NotRequired[list[TopToken]]


class GenerationDetails(TypedDict):
    finish_reason: Literal["eos_token", "stop_sequence", "length"]
    generated_tokens: int
    input_tokens: int
    seed: int | None
    tokens: NotRequired[list[Token]]


class TextGenerationResponse(TypedDict):
    request_id: str
    inference_status: InferenceStatus
    results: list[GeneratedText]
    num_tokens: int
    num_input_tokens: int
    details: NotRequired[GenerationDetails]


class TextGenerationStreamEvent(TypedDict):
    """One `data:` event per token (TGI's shape); the last one carries `generated_text`,
    `details`, `inference_status` and `request_id`."""

    token: Token
    generated_text: str | None
    details: GenerationDetails | None
    inference_status: NotRequired[InferenceStatus]
    request_id: NotRequired[str]


class EmbeddingsResponse(TypedDict):
    request_id: str
    embeddings: list[list[float]]
    input_tokens: int
    inference_status: InferenceStatus
