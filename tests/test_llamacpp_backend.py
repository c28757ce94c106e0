"""The llama.cpp backend in-process: batches go to llama.cpp sorted by packed sequence ids (one
ubatch per step under split KV), and closing a hole by moving a sequence keeps its KV cache."""

from __future__ import annotations

import numpy as np
import pytest

from inferd.catalog import Catalog
from inferd.engines.llm.backend import ForwardEntry
from inferd.engines.llm.llamacpp_backend import LlamaCppBackend
from inferd.weights.resolve import resolve_weights
from tests.conftest import CHAT_MODEL

PROMPTS = ["The capital of France is", "One, two, three,", "def fib(n):", "Once upon a time"]


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    spec = Catalog.load(None).resolve(CHAT_MODEL)
    options = {**spec.options, "max_seqs": 4, "kv_tokens": 1024}  # split KV, 256 cells a slot
    return LlamaCppBackend(resolve_weights(spec.weights), spec.context_length, options)


def greedy(
    backend: LlamaCppBackend, slots: list[int], steps: int, drop: dict[int, int] | None = None
) -> dict[int, list[int]]:
    """Greedy tokens per slot, fed in the order of `slots`; drop: slot -> step it is released."""
    prompts = {slot: backend.tokenize(PROMPTS[slot], True) for slot in slots}
    rows = backend.forward([ForwardEntry(s, prompts[s], 0, True) for s in slots])
    out = {s: [int(np.argmax(row))] for s, row in zip(slots, rows, strict=True)}
    live = list(slots)
    for step in range(steps):
        for slot in [s for s in live if (drop or {}).get(s) == step]:
            backend.release(slot)
            live.remove(slot)
        entries = [ForwardEntry(s, [out[s][-1]], len(prompts[s]) + step, True) for s in live]
        for s, row in zip(live, backend.forward(entries), strict=True):
            out[s].append(int(np.argmax(row)))
    for slot in live:
        backend.release(slot)
    return out


def test_order_and_holes_do_not_change_tokens(backend: LlamaCppBackend) -> None:
    reference = greedy(backend, [3, 2], steps=10)  # descending slots: rows map back in order
    moves = backend.moves
    # Slots 0 and 1 take the lowest ids and leave mid-way: the later sequences move down.
    got = greedy(backend, [0, 1, 2, 3], steps=10, drop={0: 2, 1: 4})
    assert backend.moves >= moves + 2
    assert got[2] == reference[2]
    assert got[3] == reference[3]
