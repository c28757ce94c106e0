"""Sampling parameters of one generation, as the gateway sends them (protocol-neutral)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int | None = None  # None: up to the context end (and the output cap)
    max_output_tokens: int = 16384
    default_max_tokens: int | None = None  # when max_tokens is None: this, clamped to context
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    top_logprobs: int = 0  # alternatives reported per generated token
    prompt_logprobs: bool = False  # score the prompt too (completions `echo` + `logprobs`)
    # Constrained decoding: {"type": "json_object"} | {"type": "json_schema", "schema": {...}}
    # | {"type": "lark", "grammar": "..."}; compiled with llguidance.
    constraint: dict | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )
