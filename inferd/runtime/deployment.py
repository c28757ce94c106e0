"""A served model: its spec and its replicas, with least-loaded routing. LoRA adapters of the
model are loaded into all of its replicas (no replica of their own). The control plane scales
the replicas of a deployed version (`scale_to`), to zero and back: a request that finds none
starts one at once and waits for it.

This is the local backend's `ModelDeployment`: made of the `Replica`s this process starts.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from inferd import metrics
from inferd.catalog.spec import ModelSpec
from inferd.requests import InferenceRequest, ModelInfo
from inferd.runtime.backend import AdapterError, ModelDeployment, Replica, ReplicaBackend
from inferd.runtime.call import Call, ModelUnavailable

_HOST = socket.gethostname()


class Deployment(ModelDeployment):
    def __init__(self, spec: ModelSpec, backend: ReplicaBackend) -> None:
        self.spec = spec
        self.backend = backend
        self._replicas: list[Replica] = [
            backend.create_replica(spec, i) for i in range(spec.replicas)
        ]
        self._next_index = len(self._replicas)
        self.last_used = time.monotonic()  # the last request's arrival (scale to zero)
        self.waiting = 0  # requests waiting for a replica to be ready
        self.scale_from_zero = False  # a request finding no replica starts one (autoscaled)
        self.adapters: dict[str, str] = {}  # name → GGUF LoRA path, for replicas started later
        # Read when metrics are scraped: nothing to count per request.
        metrics.IN_FLIGHT.labels(metrics.model_label(spec.name, spec.deploy_id)).set_function(
            self.in_flight
        )

    @property
    def replicas(self) -> list[Replica]:
        return self._replicas

    def instances(self) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{self.spec.key}-{getattr(r, 'index', i)}",
                "state": "running" if r.ready else "starting",
                "node": _HOST,
            }
            for i, r in enumerate(self._replicas)
        ]

    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

    def load(self) -> int:
        """Requests on replicas plus those waiting for one: what the autoscaler sizes for."""
        return self.in_flight() + self.waiting

    async def scale_to(self, count: int) -> None:
        """Start replicas up to `count`, or stop idle ready ones down to it. A replica still
        starting, or one with requests in flight, is never stopped (a later call retries)."""
        while len(self.replicas) < count:
            replica = self.backend.create_replica(self.spec, self._next_index)
            self._next_index += 1
            # The model's adapters, loaded as soon as the new worker is ready.
            replica.adapters.update(self.adapters)
            self._replicas.append(replica)
            await replica.start()
        surplus = len(self.replicas) - count
        if surplus <= 0:
            return
        idle = [r for r in self.replicas if r.ready and r.in_flight == 0][:surplus]
        for replica in idle:
            self._replicas.remove(replica)
        await asyncio.gather(*(r.stop() for r in idle))

    @property
    def ready(self) -> bool:
        return any(r.ready for r in self.replicas)

    @property
    def info(self) -> ModelInfo | None:
        """What a loaded replica reported; None until one has loaded."""
        for replica in self.replicas:
            if replica.info is not None:
                return replica.info
        return None

    async def start(self) -> None:
        for replica in self.replicas:
            await replica.start()

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas))

    async def submit(self, request: InferenceRequest, ready_timeout_s: float) -> Call:
        self.last_used = time.monotonic()
        replica = self._pick()
        if replica is None:
            replica = await self._wait_for_replica(ready_timeout_s)
        return replica.submit(request)

    async def _wait_for_replica(self, timeout_s: float) -> Replica:
        """Starting, restarting after a crash, or scaled to zero: wait rather than fail."""
        if not self.replicas and self.scale_from_zero:
            await self.scale_to(1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.waiting += 1
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ModelUnavailable(
                        f"The model `{self.spec.name}` is not ready; retry later."
                    )
                # Re-checked at least twice a second: replicas come and go meanwhile.
                waits = [asyncio.ensure_future(r.wait_ready()) for r in self.replicas]
                try:
                    if waits:
                        await asyncio.wait(
                            waits, timeout=min(remaining, 0.5), return_when="FIRST_COMPLETED"
                        )
                    else:
                        await asyncio.sleep(min(remaining, 0.05))
                finally:
                    for task in waits:
                        task.cancel()
                replica = self._pick()
                if replica is not None:
                    return replica
        finally:
            self.waiting -= 1

    async def load_adapter(self, name: str, path: str, ready_timeout_s: float = 300) -> None:
        """Load a GGUF LoRA into every replica, running ones without a restart. On any
        refusal, replicas that took it drop it again and the first error is raised."""
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(r.load_adapter(name, path) for r in self.replicas), return_exceptions=True
                ),
                ready_timeout_s,
            )
        except TimeoutError:
            raise ModelUnavailable(
                f"The model `{self.spec.name}` did not become ready to take the adapter."
            ) from None
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            took = [rep for rep, r in zip(self.replicas, results, strict=True) if r is None]
            await asyncio.gather(*(t.unload_adapter(name) for t in took), return_exceptions=True)
            raise errors[0]
        self.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        """Remove an adapter from every replica; AdapterError (404) if none had it."""
        if self.adapters.pop(name, None) is not None and not self.replicas:
            return  # scaled to zero: no worker holds it
        results = await asyncio.gather(
            *(r.unload_adapter(name) for r in self.replicas), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise errors[0]
        for error in errors:
            if not isinstance(error, AdapterError):
                raise error

    def _pick(self) -> Replica | None:
        if len(self.replicas) == 1:
            replica = self.replicas[0]
            return replica if replica.ready else None
        ready = [r for r in self.replicas if r.ready]
        return min(ready, key=lambda r: r.in_flight) if ready else None
