"""schemathesis hooks for tests/test_schemathesis.py: half the generated requests name a served
model (`model` in the path or the body), so they reach real inference; random names only meet
the 404. The served models come from INFERD_ST_MODELS (comma-separated)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

MODELS = [m for m in os.environ.get("INFERD_ST_MODELS", "").split(",") if m]


def _with_model(value: Any) -> st.SearchStrategy[Any]:
    if not MODELS or not isinstance(value, dict) or "model" not in value:
        return st.just(value)
    served = st.sampled_from(MODELS).map(lambda model: {**value, "model": model})
    return st.one_of(st.just(value), served)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _with_model(path_parameters)


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    return _with_model(body)
