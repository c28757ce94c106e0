"""A served model: its spec and its replicas, with least-loaded routing."""

from __future__ import annotations

import asyncio

from inferd import metrics
from inferd.catalog.spec import ModelSpec
from inferd.requests import InferenceRequest, ModelInfo
from inferd.runtime.backend import Replica, ReplicaBackend
from inferd.runtime.call import Call, ModelUnavailable


class Deployment:
    def __init__(self, spec: ModelSpec, backend: ReplicaBackend) -> None:
        self.spec = spec
        self.replicas: list[Replica] = [
            backend.create_replica(spec, i) for i in range(spec.replicas)
        ]
        # Read when metrics are scraped: nothing to count per request.
        metrics.IN_FLIGHT.labels(spec.name).set_function(self.in_flight)

    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas)

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
        replica = self._pick()
        if replica is None:
            # Starting or restarting after a crash: wait rather than fail the request.
            waits = [asyncio.create_task(r.wait_ready()) for r in self.replicas]
            try:
                await asyncio.wait(waits, timeout=ready_timeout_s, return_when="FIRST_COMPLETED")
            finally:
                for task in waits:
                    task.cancel()
            replica = self._pick()
            if replica is None:
                raise ModelUnavailable(f"The model `{self.spec.name}` is not ready; retry later.")
        return replica.submit(request)

    def _pick(self) -> Replica | None:
        if len(self.replicas) == 1:
            replica = self.replicas[0]
            return replica if replica.ready else None
        ready = [r for r in self.replicas if r.ready]
        return min(ready, key=lambda r: r.in_flight) if ready else None
