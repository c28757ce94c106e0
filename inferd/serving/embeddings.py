"""Embeddings on the serving path, shared by the OpenAI and native routes and jobs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inferd import metrics
from inferd.billing.pricing import token_cost
from inferd.requests import Embed, Embedded
from inferd.serving.admission import Admission
from inferd.serving.errors import RequestError

if TYPE_CHECKING:
    from inferd.serving.core import Serving


@dataclass
class EmbeddingsResult:
    admission: Admission
    vectors: np.ndarray  # float32, one row per input
    tokens: int
    cost: float


async def run_embeddings(
    serving: Serving, admission: Admission, request: Embed
) -> EmbeddingsResult:
    status, tokens, cost = 500, 0, 0.0
    try:
        event = await serving.unary(admission, request, Embedded)
        status, tokens = 200, event.tokens
        cost = token_cost(admission.spec.price, tokens, 0)
    except RequestError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    finally:
        await admission.finish(status, tokens, 0, cost)
    metrics.token_counter(admission.meta.label or "", "input").inc(tokens)
    vectors = np.frombuffer(event.vectors, dtype=np.float32).reshape(-1, event.dims)
    return EmbeddingsResult(admission, vectors, tokens, cost)
