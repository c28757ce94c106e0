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
    choice = _draw(weights, rng.random())
    return choice if candidates is None else int(candidates[choice])


_BLOCK = 256


def _draw(weights: np.ndarray, u: float) -> int:
    """The index where the running sum of `weights` passes u x their total (u in [0, 1)).

    np.cumsum does not vectorise: over a 49k vocabulary it took ~0.3 ms a token, 5 ms of every
    16-sequence step. Block sums (vectorised) find the block, a cumsum inside it the index:
    ~0.04 ms, and the same draw as one cumsum over the whole array."""
    n = weights.shape[0]
    full = n - n % _BLOCK
    sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if full < n:
        sums = np.append(sums, weights[full:].sum(dtype=np.float64))
    cdf = np.cumsum(sums)
    target = u * cdf[-1]
    block = int(np.searchsorted(cdf, target, side="right"))
    if block == len(cdf):  # rounding: u x total landed on the total
        block = int(np.flatnonzero(sums)[-1])
    start = block * _BLOCK
    part = weights[start : start + _BLOCK]
    inner = np.cumsum(part, dtype=np.float64)
    index = int(np.searchsorted(inner, target - (cdf[block - 1] if block else 0.0), "right"))
    if index == len(inner):  # rounding between the block sum and its cumsum: last non-zero one
        index = int(np.flatnonzero(part)[-1])
    return start + index


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
