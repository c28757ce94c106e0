"""Binary inputs as the gateway sends them (base64 in the payload), decoded in the worker."""

from __future__ import annotations

import base64
import io
from typing import Any

from inferd.engines.base import EngineError


def input_bytes(inputs: dict[str, Any], name: str) -> bytes:
    value = inputs.get(name)
    if not isinstance(value, str) or not value:
        raise EngineError(f"`{name}` is required.")
    return base64.b64decode(value)


def input_image(inputs: dict[str, Any], name: str = "image"):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(input_bytes(inputs, name))).convert("RGB")
    except (OSError, ValueError):
        raise EngineError(f"`{name}`: the image could not be decoded.") from None


def input_text(inputs: dict[str, Any], name: str = "input") -> str:
    value = inputs.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EngineError(f"`{name}` must be a non-empty string.")
    return value
