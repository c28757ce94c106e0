"""The runtime: one deployment per catalog entry, on a replica backend."""

from __future__ import annotations

from inferd.catalog import Catalog
from inferd.requests import InferenceRequest, ModelInfo
from inferd.runtime.backend import ReplicaBackend
from inferd.runtime.call import Call
from inferd.runtime.deployment import Deployment


class Runtime:
    def __init__(self, catalog: Catalog, backend: ReplicaBackend, ready_timeout_s: float) -> None:
        self.deployments = {spec.name: Deployment(spec, backend) for spec in catalog}
        self.ready_timeout_s = ready_timeout_s

    async def start(self) -> None:
        for deployment in self.deployments.values():
            await deployment.start()

    async def stop(self) -> None:
        for deployment in self.deployments.values():
            await deployment.stop()

    @property
    def ready(self) -> bool:
        return all(d.ready for d in self.deployments.values())

    def info(self, model: str) -> ModelInfo | None:
        return self.deployments[model].info

    async def submit(self, model: str, request: InferenceRequest) -> Call:
        return await self.deployments[model].submit(request, self.ready_timeout_s)
