"""Replicas as local worker processes, connected by a socketpair.

A worker that dies (crash, OOM kill, SIGKILL) closes its socket; the reader sees EOF at once,
fails every in-flight call with a 503 error event and starts a new process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
from typing import Any

from inferd import metrics
from inferd.catalog.spec import ModelSpec
from inferd.runtime.backend import Replica, ReplicaBackend
from inferd.runtime.call import WORKER_LOST, Call
from inferd.worker.protocol import HEADER, MAX_FRAME, decode, encode

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
        self.info: dict[str, Any] = {}
        self.restart_backoff_s = restart_backoff_s
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, Call] = {}
        self._ids = itertools.count(1)
        self._outbox: list[bytes] = []
        self._queue_depth = metrics.IN_FLIGHT.labels(spec.name)
        self._ready = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

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

    def submit(self, payload: dict[str, Any]) -> Call:
        call = Call(f"{next(self._ids):x}", self._cancel)
        self._pending[call.id] = call
        self._send(encode({"op": "submit", "id": call.id, "payload": payload}))
        self._queue_depth.inc()
        return call

    def _send(self, frame: bytes) -> None:
        # Frames queued in one event-loop turn leave in one write (one syscall under load).
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(frame)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    def _cancel(self, call: Call) -> None:
        if self._pending.pop(call.id, None) is not None:
            self._queue_depth.dec()
            self._send(encode({"op": "cancel", "id": call.id}))

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
                metrics.REPLICAS.labels(self.spec.name).dec()
            self._fail_pending()
            if self._stopping:
                return
            self.restarts += 1
            metrics.WORKER_RESTARTS.labels(self.spec.name).inc()
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
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        try:
            await self._read_events(reader)
        finally:
            self._writer.close()
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()

    async def _read_events(self, reader: asyncio.StreamReader) -> None:
        pending = self._pending
        while True:
            try:
                header = await reader.readexactly(HEADER.size)
                (length,) = HEADER.unpack(header)
                if length > MAX_FRAME:
                    return
                event = decode(await reader.readexactly(length))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            call_id = event.pop("id", None)
            if call_id is None:
                self._control(event)
                continue
            call = pending.get(call_id)
            if call is None:
                continue  # cancelled meanwhile
            if event["ev"] in ("done", "result", "error"):
                del pending[call_id]
                self._queue_depth.dec()
            call.deliver(event)

    def _control(self, event: dict[str, Any]) -> None:
        if event["ev"] == "ready":
            self.info = event.get("info", {})
            self._ready.set()
            metrics.REPLICAS.labels(self.spec.name).inc()
            log.info("worker ready", extra={"model": self.spec.name, "pid": event.get("pid")})
        elif event["ev"] == "fatal":
            log.error(
                "worker could not load its model",
                extra={"model": self.spec.name, "error": event.get("message", "")},
            )

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for call in pending.values():
            self._queue_depth.dec()
            call.deliver(dict(WORKER_LOST))


class LocalBackend(ReplicaBackend):
    def __init__(self, restart_backoff_s: float = 0.5, env: dict[str, str] | None = None) -> None:
        self.restart_backoff_s = restart_backoff_s
        self.env = env or {}

    def create_replica(self, spec: ModelSpec, index: int) -> Replica:
        return LocalReplica(spec, index, self.restart_backoff_s, self.env)
