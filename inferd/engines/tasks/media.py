"""Checks on task inputs inside the worker: bytes present, images decodable, text non-empty."""

from __future__ import annotations

import io

from inferd.engines.base import EngineError


def input_bytes(value: bytes, name: str) -> bytes:
    if not value:
        raise EngineError(f"`{name}` is required.")
    return value


def input_image(value: bytes, name: str = "image"):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(input_bytes(value, name))).convert("RGB")
    except (OSError, ValueError):
        raise EngineError(f"`{name}`: the image could not be decoded.") from None


def input_text(value: str, name: str = "input") -> str:
    if not isinstance(value, str) or not value.strip():
        raise EngineError(f"`{name}` must be a non-empty string.")
    return value
