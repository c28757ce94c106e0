"""Image checks: the format by its magic number (jpg, png, webp) and that it decodes."""

from __future__ import annotations

import base64
import binascii
import io

from inferd.api.errors import APIError

# Magic numbers, not declared types: what the bytes are is what counts.
_FORMATS = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}
MAX_PIXELS = 64_000_000  # beyond this a "small" file is a decompression bomb
# PIL walks PNG chunks and JPEG header segments one by one in Python: a file made of millions
# of empty ones costs seconds of CPU. Real images have a few (a large PNG a few thousand IDATs).
MAX_SEGMENTS = 20_000


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


def segments(data: bytes) -> int:
    """PNG chunks, or JPEG segments before the scan, counted up to MAX_SEGMENTS + 1 by their
    length fields alone (no decoding)."""
    count, size = 0, len(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        at = 8
        while at + 8 <= size and count <= MAX_SEGMENTS:
            count += 1
            at += 12 + int.from_bytes(data[at : at + 4], "big")
    elif data.startswith(b"\xff\xd8"):
        at = 2
        while at + 4 <= size and count <= MAX_SEGMENTS and data[at] == 0xFF:
            marker = data[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            count += 1
            if marker == 0xDA:  # start of scan: the header is over
                break
            if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # no length field
                at += 2
                continue
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return count


def check_decodes(data: bytes, field: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if segments(data) > MAX_SEGMENTS:
        raise APIError(
            400, f"`{field}`: the image's structure is not one a real image has.", param=field
        )
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
