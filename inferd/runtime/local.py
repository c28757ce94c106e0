"""Replicas as local worker processes, connected by a socketpair.

A worker that dies (crash, OOM kill, SIGKILL) closes its socket; the reader sees EOF at once,
fails every in-flight call with a 503 error event and starts a new process. LoRA adapters
loaded at run time are remembered here and sent to each new process as soon as it is ready,
ahead of any request that could name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable

import msgspec

from inferd import metrics
from inferd.catalog.spec import ModelSpec
from inferd.requests import (
    TERMINAL,
    AdapterCommand,
    AdapterLoaded,
    AdapterUnloaded,
    ControlEvent,
    Failed,
    InferenceRequest,
    LoadAdapter,
    ModelInfo,
    Ready,
    UnloadAdapter,
)
from inferd.runtime.backend import AdapterError, Placement, Replica, ReplicaBackend
from inferd.runtime.call import WORKER_LOST, Call
from inferd.runtime.deployment import Deployment
from inferd.worker.protocol import (
    Adapter,
    Cancel,
    Control,
    FrameBuffer,
    FrameTooLarge,
    Reply,
    Submit,
    ToGateway,
    encode,
    to_gateway,
)

log = logging.getLogger("inferd.runtime")

WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}


class LocalReplica(Replica):
    def __init__(
        self, spec: ModelSpec, index: int, restart_backoff_s: float, env: dict[str, str]
    ) -> None:
        self.spec = spec
        self.env = env
        self.index = index
        self.info: ModelInfo | None = None
        self.restart_backoff_s = restart_backoff_s
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.Transport | None = None
        self._pending: dict[str, Call] = {}
        self._ids = itertools.count(1)
        self._outbox: list[bytes] = []
        self._ready = asyncio.Event()
        self.ready_since: float | None = None  # monotonic; uptime billing counts from here
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0
        self.adapters: dict[str, str] = {}  # name -> GGUF LoRA path, loaded into every worker
        self._reloads: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name=f"replica-{self.spec.name}")

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def submit(self, request: InferenceRequest) -> Call:
        call = Call(f"{next(self._ids):x}", self._cancel)
        frame = encode(Submit(call.id, request))  # may raise (OverflowError): nothing to undo
        self._pending[call.id] = call
        self._send(frame)
        return call

    def _send(self, frame: bytes) -> None:
        # A lone request (nothing else in flight) leaves at once: a loop turn of latency saved.
        # Under load, frames queued in one event-loop turn leave in one write (one syscall).
        if not self._outbox and len(self._pending) <= 1:
            if self._writer is not None and not self._writer.is_closing():
                self._writer.write(frame)
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(frame)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    def _adapter_call(self, command: AdapterCommand) -> Call:
        call = Call(f"{next(self._ids):x}", self._forget)
        self._pending[call.id] = call
        self._send(encode(Adapter(call.id, command)))
        return call

    def _forget(self, call: Call) -> None:
        self._pending.pop(call.id, None)

    async def load_adapter(self, name: str, path: str) -> None:
        await self.wait_ready()
        previous = self.adapters.get(name)
        self.adapters[name] = path
        event = await self._adapter_call(LoadAdapter(name=name, path=path)).result()
        if isinstance(event, AdapterLoaded):
            return
        # Refused, or the worker died loading it: the next worker must not load it again
        # (an adapter that crashes the worker would otherwise crash every restart).
        if previous is None:
            self.adapters.pop(name, None)
        else:
            self.adapters[name] = previous  # the worker keeps the old one when a load fails
        raise AdapterError(event if isinstance(event, Failed) else _odd_reply())

    async def unload_adapter(self, name: str) -> None:
        known = self.adapters.pop(name, None) is not None
        if not self.ready:
            if not known:
                raise AdapterError(_no_adapter(name))
            return  # no worker holds it; the next one will not load it
        event = await self._adapter_call(UnloadAdapter(name=name)).result()
        if isinstance(event, AdapterUnloaded) or event is WORKER_LOST:
            return  # a worker that died holds nothing
        raise AdapterError(event if isinstance(event, Failed) else _odd_reply())

    def _reload_adapters(self) -> None:
        """Send every remembered adapter to a new worker (before any request reaches it:
        frames leave in order and the worker handles them in order)."""
        for name, path in self.adapters.items():
            call = self._adapter_call(LoadAdapter(name=name, path=path))
            task = asyncio.get_running_loop().create_task(self._reloaded(name, path, call))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reloaded(self, name: str, path: str, call: Call) -> None:
        event = await call.result()
        if isinstance(event, AdapterLoaded):
            return
        # Forgotten, not retried at every restart (a file gone, or one that kills the worker).
        if self.adapters.get(name) == path:
            del self.adapters[name]
        code = event.code if isinstance(event, Failed) else type(event).__name__
        log.error(
            "worker could not reload an adapter; it is dropped",
            extra={"model": self.spec.name, "reason": f"adapter {name}", "error": code},
        )

    def _cancel(self, call: Call) -> None:
        if self._pending.pop(call.id, None) is not None:
            self._send(encode(Cancel(call.id)))

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.close()  # the worker exits when its socket closes
        if self.process and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "worker failed", extra={"model": self.spec.name, "error": type(exc).__name__}
                )
            if self._ready.is_set():
                self._ready.clear()
                self.ready_since = None
                metrics.REPLICAS.labels(
                    metrics.model_label(self.spec.name, self.spec.deploy_id)
                ).dec()
            self._fail_pending()
            if self._stopping:
                return
            self.restarts += 1
            metrics.WORKER_RESTARTS.labels(
                metrics.model_label(self.spec.name, self.spec.deploy_id)
            ).inc()
            log.warning("restarting worker", extra={"model": self.spec.name, "replica": self.index})
            await asyncio.sleep(self.restart_backoff_s)

    async def _run_once(self) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, **WORKER_ENV, **self.env}
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "inferd.worker.main",
                "--fd",
                str(child.fileno()),
                "--spec",
                self.spec.model_dump_json(),
                pass_fds=(child.fileno(),),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        loop = asyncio.get_running_loop()
        link = WorkerLink(self._on_message)
        transport, _ = await loop.create_unix_connection(lambda: link, sock=parent)
        self._writer = transport  # type: ignore[assignment]
        try:
            await link.closed
        finally:
            self._writer.close()
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()

    def _on_message(self, message: ToGateway) -> None:
        if isinstance(message, Control):
            self._control(message.event)
            return
        call = self._pending.get(message.id)
        if call is None:
            return  # cancelled meanwhile
        events = [message.event] if isinstance(message, Reply) else message.events
        for event in events:
            if isinstance(event, TERMINAL):
                del self._pending[message.id]
                call.deliver(event)
                return  # nothing follows a terminal event
            call.deliver(event)

    def _control(self, event: ControlEvent) -> None:
        if isinstance(event, Ready):
            self.info = event.info
            self._reload_adapters()
            self._ready.set()
            self.ready_since = time.monotonic()
            metrics.REPLICAS.labels(metrics.model_label(self.spec.name, self.spec.deploy_id)).inc()
            log.info("worker ready", extra={"model": self.spec.name, "pid": event.pid})
        else:
            log.error(
                "worker could not load its model",
                extra={"model": self.spec.name, "error": event.message},
            )

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for call in pending.values():
            call.deliver(WORKER_LOST)


def _no_adapter(name: str) -> Failed:
    return Failed(
        status=404, code="adapter_not_found", message=f"No adapter named `{name}` is loaded."
    )


def _odd_reply() -> Failed:
    return Failed(status=500, code="engine_error", message="The worker answered out of order.")


class WorkerLink(asyncio.Protocol):
    """The gateway's end of a worker socket: every read is split into frames and decoded in
    one callback (no coroutine step per frame). `closed` resolves when the worker is gone."""

    def __init__(self, on_message: Callable[[ToGateway], None]) -> None:
        self.on_message = on_message
        self.frames = FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            for body in self.frames.feed(data):
                self.on_message(to_gateway.decode(body))
        except (FrameTooLarge, msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A worker that speaks garbage is treated as crashed: fail its calls, restart it.
            log.error("bad frame from worker", extra={"error": type(exc).__name__})
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class LocalBackend(ReplicaBackend):
    def __init__(self, restart_backoff_s: float = 0.5, env: dict[str, str] | None = None) -> None:
        self.restart_backoff_s = restart_backoff_s
        self.env = env or {}

    def create_deployment(self, spec: ModelSpec, placement: Placement) -> Deployment:
        return Deployment(spec, self)  # sized by the control plane's autoscaler

    def create_replica(self, spec: ModelSpec, index: int) -> Replica:
        return LocalReplica(spec, index, self.restart_backoff_s, self.env)
