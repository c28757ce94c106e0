"""Image checks: the format by its magic number (jpg, png, webp) and that it decodes."""

from __future__ import annotations

import base64
import binascii
import io

from inferd.api.errors import APIError

# Magic numbers, not declared types: what the bytes are is what counts.
_FORMATS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
MAX_PIXELS = 64_000_000  # beyond this a "small" file is a decompression bomb


def sniff_image(data: bytes) -> str | None:
    for magic, name in _FORMATS.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_data_url(value: str, field: str) -> bytes:
    header, sep, payload = value.partition(",")
    if not sep or ";base64" not in header:
        raise APIError(400, f"`{field}`: a data URL must be base64 encoded.", param=field)
    return b64decode(payload, field)


def b64decode(payload: str, field: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"`{field}`: the data is not valid base64.", param=field) from None


def check_decodes(data: bytes, field: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise APIError(
                    413,
                    f"`{field}`: the image has too many pixels.",
                    param=field,
                    code="too_large",
                )
            image.verify()
            return width, height
    except APIError:
        raise
    except Image.DecompressionBombError:  # PIL's own limit (2 x 89M pixels), met in open()
        raise APIError(
            413, f"`{field}`: the image has too many pixels.", param=field, code="too_large"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise APIError(400, f"`{field}`: the image could not be decoded.", param=field) from None
