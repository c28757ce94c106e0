"""One model replica as a Ray Serve deployment: the Serve-side half of the Ray backend.

A replica hosts the same engine a local worker process hosts (`engines.factory`), in its Ray
actor. The gateway calls it through a deployment handle, never Ray's HTTP proxy: a request goes
in as msgpack bytes (the typed `InferenceRequest`), its events stream back as msgpack bytes (the
typed `Event`s) through `handle.options(stream=True)`, so nothing crosses as an untyped dict,
exactly as over a worker's socket. Engines emit from their own threads; events are handed to
the actor's event loop and out through one async generator per call.

The gateway-side half (placing one Serve application per deployment version, autoscaling,
handles in the runtime) is the rest of the Ray backend issue.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from inferd.catalog.spec import ModelSpec
from inferd.requests import TERMINAL, Event, Failed, InferenceRequest, ModelInfo

_requests = msgspec.msgpack.Decoder(InferenceRequest)
_events = msgspec.msgpack.Decoder(Event)
_info = msgspec.msgpack.Decoder(ModelInfo)
_encoder = msgspec.msgpack.Encoder()
BAD_REQUEST = Failed(status=400, code="bad_request", message="The request was malformed.")


def encode_request(request: InferenceRequest) -> bytes:
    return _encoder.encode(request)


def decode_event(data: bytes) -> Event:
    return _events.decode(data)


def decode_info(data: bytes) -> ModelInfo:
    return _info.decode(data)


class ModelReplica:
    """The body of a Serve deployment (wrapped with `serve.deployment` by the backend, so this
    module imports without Ray): one engine, many concurrent calls."""

    def __init__(self, spec_json: str) -> None:
        from inferd.engines.factory import build_engine

        self.spec = ModelSpec.model_validate_json(spec_json)
        # Serve may run __init__ off the actor's loop: the loop is taken at the first call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[str, asyncio.Queue[Event]] = {}
        self._ids = itertools.count()
        self.engine = build_engine(self.spec, self._emit)

    def _emit(self, call_id: str, event: Event) -> None:
        # From the engine's threads (or inline from submit): into the actor's loop.
        queue = self._calls.get(call_id)
        if queue is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(queue.put_nowait, event)

    async def __call__(self, request: bytes) -> AsyncIterator[bytes]:
        """Run one request; its events, the last one terminal."""
        try:
            decoded = _requests.decode(request)
        except (msgspec.DecodeError, msgspec.ValidationError):
            yield _encoder.encode(BAD_REQUEST)
            return
        self._loop = self._loop or asyncio.get_running_loop()
        call_id = f"c{next(self._ids)}"
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._calls[call_id] = queue
        done = False
        try:
            self.engine.submit(call_id, decoded)
            while not done:
                event = await queue.get()
                done = isinstance(event, TERMINAL)
                yield _encoder.encode(event)
        finally:
            self._calls.pop(call_id, None)
            if not done:  # the caller went away (or was cancelled): stop the work
                self.engine.cancel(call_id)

    async def info(self) -> bytes:
        return _encoder.encode(self.engine.info())

    async def node(self) -> str:
        """The Ray node this replica runs on (shown per instance in the deploy object)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def __del__(self) -> None:
        engine: Any = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
