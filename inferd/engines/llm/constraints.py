"""Constrained decoding with llguidance: JSON objects, JSON schemas and Lark grammars.

Every step the matcher yields a bitmask of the tokens that keep the output inside the
grammar; disallowed tokens get -inf before sampling, so the output always parses (and
validates, for a schema) unless max_tokens cuts it short.
"""

from __future__ import annotations

from typing import Any

import llguidance
import llguidance.numpy as llnp
import numpy as np

from inferd.engines.base import EngineError
from inferd.requests import Constraint

# Compact separators: small models otherwise spend tokens on (and loop in) whitespace.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def grammar_for(constraint: Constraint) -> str:
    kind = constraint.type
    try:
        if kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema(
                {"type": "object"}, overrides=_JSON_OPTIONS
            )
        if kind == "json_schema":
            schema = constraint.schema
            if not isinstance(schema, dict):
                raise EngineError("json_schema needs a `schema` object.", code="invalid_schema")
            schema = {k: v for k, v in schema.items() if k != "$schema"}
            return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
        if kind == "lark":
            return llguidance.LLMatcher.grammar_from_lark(constraint.grammar or "")
    except (ValueError, TypeError) as exc:
        raise EngineError(f"Invalid schema: {exc}", code="invalid_schema") from None
    raise EngineError(f"Unknown constraint type `{kind}`.", code="invalid_constraint")


def compile_constraint(tokenizer: Any, constraint: Constraint) -> llguidance.LLMatcher:
    matcher = llguidance.LLMatcher(tokenizer, grammar_for(constraint), log_level=0)
    if matcher.is_error():
        raise EngineError(f"Invalid schema: {matcher.get_error()}", code="invalid_schema")
    return matcher


def apply_mask(matcher: llguidance.LLMatcher, logits: np.ndarray, n_vocab: int) -> np.ndarray:
    mask = llnp.allocate_token_bitmask(1, n_vocab)
    llnp.fill_next_token_bitmask(matcher, mask)
    allowed = np.unpackbits(mask[0].view(np.uint8), bitorder="little")[:n_vocab].astype(bool)
    scores = np.where(allowed, logits[:n_vocab], -np.inf).astype(np.float32)
    if not allowed.any():
        raise EngineError("The grammar allows no continuation.", status=500, code="grammar_dead")
    return scores
