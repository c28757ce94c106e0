"""Frames between the gateway's runtime and a worker process.

A frame is a 4-byte big-endian length followed by one orjson-encoded object. Requests go
gateway → worker as ``{"op": "submit" | "cancel", "id": ..., ...}``; events come back as
``{"id": ..., "ev": ...}``. Event kinds:

- ``ready``   (no id) the engine loaded; carries ``info`` about the model.
- ``start``   prompt accepted; carries ``prompt_tokens``.
- ``tokens``  generated tokens: ``items`` = [[token_id, text, logprob, special], ...].
- ``result``  a unary task's whole result (embeddings, ...).
- ``done``    a generation ended; carries ``finish_reason`` and token counts.
- ``error``   the request failed; carries ``status``, ``code`` and ``message`` (never content).
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message, option=_DUMP_OPTIONS)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    return orjson.loads(body)
