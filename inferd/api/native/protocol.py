"""Native request bodies, per task."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    seed: int | None = None
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
