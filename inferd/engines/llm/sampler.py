"""Token sampling from raw logits with numpy.

Log probabilities are taken from the model's own distribution (log-softmax of the raw logits),
before penalties and temperature, so they can be checked against the model's scores.
"""

from __future__ import annotations

import numpy as np

from inferd.requests import SamplingParams


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    peak = float(logits.max())
    lse = peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
    return float(logits[token]) - lse


def apply_penalties(
    logits: np.ndarray,
    params: SamplingParams,
    prompt_ids: np.ndarray,
    output_ids: list[int],
) -> np.ndarray:
    logits = logits.copy()
    if params.repetition_penalty != 1.0:
        # HF semantics: tokens seen in prompt or output are made less likely, whatever the sign.
        seen = np.unique(np.concatenate([prompt_ids, np.asarray(output_ids, dtype=np.int64)]))
        vals = logits[seen]
        logits[seen] = np.where(
            vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty
        )
    if output_ids and (params.presence_penalty or params.frequency_penalty):
        # OpenAI semantics: over generated tokens only.
        ids, counts = np.unique(np.asarray(output_ids, dtype=np.int64), return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
    return logits


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    if params.greedy:
        return int(np.argmax(logits))
    scaled = logits / np.float32(params.temperature)
    candidates = None
    if 0 < params.top_k < scaled.shape[0]:
        candidates = np.argpartition(scaled, -params.top_k)[-params.top_k :]
        scaled = scaled[candidates]
    # Unnormalised weights: the largest is exactly 1, so min_p compares against it directly.
    weights = np.exp(scaled - scaled.max())
    if params.min_p > 0.0:
        weights[weights < params.min_p] = 0.0
    if params.top_p < 1.0:
        weights = _top_p(weights, params.top_p)
    # Inverse-CDF draw: one uniform number per token keeps seeded runs reproducible.
    cdf = np.cumsum(weights, dtype=np.float64)
    choice = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    choice = min(choice, weights.shape[0] - 1)
    return choice if candidates is None else int(candidates[choice])


def _top_p(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filter. Grows a top-k window instead of sorting the whole vocabulary."""
    n = weights.shape[0]
    target = top_p * float(weights.sum())
    k = min(64, n)
    while True:
        top = np.argpartition(weights, -k)[-k:]
        top = top[np.argsort(weights[top])[::-1]]
        cumulative = np.cumsum(weights[top], dtype=np.float64)
        if cumulative[-1] >= target or k == n:
            keep = top[: int(np.searchsorted(cumulative, target)) + 1]
            out = np.zeros_like(weights)
            out[keep] = weights[keep]
            return out
        k = min(k * 4, n)
