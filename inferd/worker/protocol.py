"""Frames between the gateway's runtime and a worker process.

A frame is a 4-byte big-endian length followed by one msgpack message (msgspec, typed: the
types are `inferd.requests`). Bytes (images, audio, embeddings) travel as msgpack binary.

- gateway → worker: `Submit` (a call id and an `InferenceRequest`), `Cancel`, or `Adapter` (a
  call id and a `LoadAdapter` / `UnloadAdapter` command, answered like a request: one terminal
  `AdapterLoaded` / `AdapterUnloaded` / `Failed` event under that id).
- worker → gateway: `Reply` (a call id and an `Event`), `Replies` (a call id and several
  events in order) or `Control` (`Ready`, `Fatal`).
"""

from __future__ import annotations

import struct

import msgspec
from msgspec import Struct

from inferd.requests import AdapterCommand, ControlEvent, Event, InferenceRequest

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


class Submit(Struct, tag="submit", array_like=True):
    id: str
    request: InferenceRequest


class _SubmitRaw(Struct, tag="submit", array_like=True):
    """A Submit whose request is decoded on its own, so a malformed request fails that one
    call instead of the worker."""

    id: str
    request: msgspec.Raw


class Cancel(Struct, tag="cancel", array_like=True):
    id: str


class Adapter(Struct, tag="adapter", array_like=True):
    id: str
    command: AdapterCommand


class Reply(Struct, tag="reply", array_like=True):
    id: str
    event: Event


class Replies(Struct, tag="replies", array_like=True):
    """Consecutive events of one call in one frame (a unary answer is Started, Tokens and
    Finished at once): one decode and one dispatch instead of three."""

    id: str
    events: list[Event]


class Control(Struct, tag="control", array_like=True):
    event: ControlEvent


ToWorker = Submit | Cancel | Adapter
ToGateway = Reply | Replies | Control


def _builtin(value: object) -> object:
    """numpy scalars and arrays in task outputs (scores, timestamps) as plain values."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_builtin)
_to_worker = msgspec.msgpack.Decoder(_SubmitRaw | Cancel | Adapter)
_request = msgspec.msgpack.Decoder(InferenceRequest)
to_gateway = msgspec.msgpack.Decoder(ToGateway)


class BadRequest(Exception):
    def __init__(self, call_id: str, error: msgspec.MsgspecError) -> None:
        super().__init__(str(error))
        self.call_id = call_id


def decode_to_worker(body: bytes) -> ToWorker:
    """Raises BadRequest (with the call id) when only the request part is malformed."""
    message = _to_worker.decode(body)
    if not isinstance(message, _SubmitRaw):
        return message
    try:
        return Submit(message.id, _request.decode(message.request))
    except msgspec.MsgspecError as exc:
        raise BadRequest(message.id, exc) from None


def encode(message: ToWorker | ToGateway) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


class FrameTooLarge(Exception):
    pass


class FrameBuffer:
    """Splits a byte stream into frame bodies. Frames arrive coalesced (many per write), so
    each read of the socket is parsed whole: no syscall or await per frame."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        bodies = []
        start, end = 0, len(buffer)
        with memoryview(buffer) as view:
            while end - start >= HEADER.size:
                (length,) = HEADER.unpack_from(view, start)
                if length > MAX_FRAME:
                    raise FrameTooLarge(length)
                if end - start - HEADER.size < length:
                    break
                start += HEADER.size
                bodies.append(bytes(view[start : start + length]))  # one copy, out of the buffer
                start += length
        if start:
            del buffer[:start]
        return bodies
