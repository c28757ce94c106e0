"""Images given by the user: a data URL, an http(s) URL or bare base64; jpg, png or webp."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass

import httpx

from inferd.api.errors import APIError
from inferd.api.media.fetch import FetchPolicy, fetch_url

# Magic numbers, not declared types: what the bytes are is what counts.
_FORMATS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
MAX_PIXELS = 64_000_000  # beyond this a "small" file is a decompression bomb


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_count: int


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


def _check_decodes(data: bytes, field: str) -> tuple[int, int]:
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise APIError(400, f"`{field}`: the image could not be decoded.", param=field) from None


async def load_image(
    value: str,
    field: str,
    *,
    client: httpx.AsyncClient,
    policy: FetchPolicy,
    limits: ImageLimits,
) -> bytes:
    """The image's bytes, checked: size, format (415 otherwise) and that it decodes."""
    if not isinstance(value, str) or not value:
        raise APIError(400, f"`{field}` must be an image URL or a data URL.", param=field)
    if value.startswith("data:"):
        if len(value) > limits.max_bytes * 4 // 3 + 128:
            raise APIError(
                413,
                f"`{field}`: the image exceeds {limits.max_bytes} bytes.",
                param=field,
                code="too_large",
            )
        data = decode_data_url(value, field)
    elif value.startswith(("http://", "https://")):
        data, _ = await fetch_url(
            client, value, field=field, max_bytes=limits.max_bytes, policy=policy
        )
    else:
        raise APIError(400, f"`{field}` must be an http(s) URL or a data URL.", param=field)
    if len(data) > limits.max_bytes:
        raise APIError(
            413,
            f"`{field}`: the image exceeds {limits.max_bytes} bytes.",
            param=field,
            code="too_large",
        )
    if sniff_image(data) is None:
        raise APIError(
            415,
            f"`{field}`: unsupported image format; send jpg, png or webp.",
            param=field,
            code="unsupported_media_type",
        )
    await asyncio.to_thread(_check_decodes, data, field)
    return data
