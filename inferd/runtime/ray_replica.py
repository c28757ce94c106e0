"""One model replica as a Ray Serve deployment: the replica side of the Ray backend.

A replica hosts the same engine a local worker process hosts (`engines.factory`), in its Ray
actor. The gateway calls it through a deployment handle, never Ray's HTTP proxy: a request goes
in as msgpack bytes (the typed `InferenceRequest`), its events stream back as msgpack bytes (the
typed `Event`s) through `handle.options(stream=True)`, so nothing crosses as an untyped dict,
exactly as over a worker's socket. Engines emit from their own threads; events are handed to
the actor's event loop, and whatever has arrived by the time the stream is read leaves as one
chunk (one Ray message per burst, not per token).

LoRA adapters use Serve's model multiplexing: a request naming an adapter carries it as the
multiplexed model id, Serve routes it to a replica that has the adapter loaded when there is
one, and the replica loads it (from the path the gateway sends along) otherwise, evicting the
least recently used one past `MAX_ADAPTERS`.

Imported only by the Ray backend (and the Ray workers), so importing Ray here costs nothing
on the local backend.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from ray import serve

from inferd.catalog.spec import ModelSpec
from inferd.requests import (
    TERMINAL,
    AdapterLoaded,
    Event,
    Failed,
    InferenceRequest,
    ModelInfo,
)

MAX_ADAPTERS = 8  # LoRA adapters one replica keeps loaded (least recently used goes first)

_requests = msgspec.msgpack.Decoder(InferenceRequest)
_events = msgspec.msgpack.Decoder(list[Event])
_info = msgspec.msgpack.Decoder(ModelInfo)
_encoder = msgspec.msgpack.Encoder()
BAD_REQUEST = Failed(status=400, code="bad_request", message="The request was malformed.")


def encode_request(request: InferenceRequest) -> bytes:
    return _encoder.encode(request)


def decode_events(data: bytes) -> list[Event]:
    return _events.decode(data)


def decode_info(data: bytes) -> ModelInfo:
    return _info.decode(data)


class AdapterRefused(Exception):
    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message)
        self.failed = failed


class LoadedAdapter:
    """What Serve's multiplexer holds per adapter; unloading it frees the engine's copy."""

    def __init__(self, unload: Callable[[], None]) -> None:
        self._unload: Callable[[], None] | None = unload

    def __del__(self) -> None:
        # Called by the multiplexer on eviction, and again by the collector: once is enough.
        unload, self._unload = self._unload, None
        if unload is not None:
            unload()


class ModelReplica:
    """The body of a Serve deployment: one engine, many concurrent calls."""

    def __init__(self, spec_json: str) -> None:
        from inferd.engines.factory import build_engine

        self.spec = ModelSpec.model_validate_json(spec_json)
        # Serve may run __init__ off the actor's loop: the loop is taken at the first call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[str, _Outbox] = {}
        self._ids = itertools.count()
        self._adapter_paths: dict[str, str] = {}
        self.engine = build_engine(self.spec, self._emit)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's user_config carries the gateway's fingerprint of the version (so a gateway
        can tell what is deployed); nothing in it changes the engine."""

    def _emit(self, call_id: str, event: Event) -> None:
        # From the engine's threads (or inline from submit): into the actor's loop.
        outbox = self._calls.get(call_id)
        if outbox is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(outbox.put, event)

    async def __call__(self, request: bytes, adapter_path: str = "") -> AsyncIterator[bytes]:
        """Run one request; its events in chunks, the last event terminal."""
        try:
            decoded = _requests.decode(request)
        except (msgspec.DecodeError, msgspec.ValidationError):
            yield _encoder.encode([BAD_REQUEST])
            return
        self._loop = self._loop or asyncio.get_running_loop()
        name = serve.get_multiplexed_model_id()
        if name:
            self._adapter_paths[name] = adapter_path
            try:
                await self.adapter(name)
            except AdapterRefused as exc:
                yield _encoder.encode([exc.failed])
                return
        call_id = f"c{next(self._ids)}"
        outbox = self._calls[call_id] = _Outbox()
        done = False
        try:
            self.engine.submit(call_id, decoded)
            while not done:
                events = await outbox.drain()
                done = isinstance(events[-1], TERMINAL)
                yield _encoder.encode(events)
        finally:
            self._calls.pop(call_id, None)
            if not done:  # the caller went away (or was cancelled): stop the work
                self.engine.cancel(call_id)

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS)
    async def adapter(self, name: str) -> LoadedAdapter:
        """Load the adapter `name` into the engine (Serve calls this once per replica)."""
        path = self._adapter_paths.get(name, "")
        if not path:
            raise AdapterRefused(
                Failed(status=404, code="adapter_not_found", message=f"No adapter `{name}`.")
            )
        event = await self._command(lambda call_id: self.engine.load_adapter(call_id, name, path))
        if not isinstance(event, AdapterLoaded):
            raise AdapterRefused(
                event
                if isinstance(event, Failed)
                else Failed(status=500, code="engine_error", message="Adapter not loaded.")
            )
        return LoadedAdapter(lambda: self.engine.unload_adapter(f"u{next(self._ids)}", name))

    async def preload(self, adapter_path: str) -> bytes:
        """Load the request's multiplexed adapter now (the gateway checks a new adapter loads
        before calling it running); its outcome as an event."""
        self._loop = self._loop or asyncio.get_running_loop()
        name = serve.get_multiplexed_model_id()
        self._adapter_paths[name] = adapter_path
        try:
            await self.adapter(name)
        except AdapterRefused as exc:
            return _encoder.encode([exc.failed])
        return _encoder.encode([AdapterLoaded(name=name)])

    async def _command(self, send: Callable[[str], None]) -> Event:
        call_id = f"a{next(self._ids)}"
        outbox = self._calls[call_id] = _Outbox()
        try:
            send(call_id)
            while True:
                for event in await outbox.drain():
                    if isinstance(event, TERMINAL):
                        return event
        finally:
            self._calls.pop(call_id, None)

    async def info(self) -> bytes:
        return _encoder.encode(self.engine.info())

    async def node(self) -> str:
        """The Ray node this replica runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def __del__(self) -> None:
        engine: Any = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


class _Outbox:
    """A call's events not yet sent; `drain` waits for at least one and takes them all."""

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: Event) -> None:
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def drain(self) -> list[Event]:
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        events, self._events = self._events, []
        return events
