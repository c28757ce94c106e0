"""The runtime: the replicas of every served model, on a replica backend.

Built-in models are added at start from the catalog; versions accounts deploy are added and
removed while the server runs (by the control plane). Keyed by `ModelSpec.key`.
"""

from __future__ import annotations

from inferd.catalog import Catalog, ModelSpec
from inferd.requests import InferenceRequest, ModelInfo
from inferd.runtime.backend import ModelDeployment, Placement, ReplicaBackend, builtin_placement
from inferd.runtime.call import Call, ModelUnavailable


class Runtime:
    def __init__(self, catalog: Catalog, backend: ReplicaBackend, ready_timeout_s: float) -> None:
        self.backend = backend
        self.deployments: dict[str, ModelDeployment] = {
            spec.key: backend.create_deployment(spec, builtin_placement(spec)) for spec in catalog
        }
        self.ready_timeout_s = ready_timeout_s

    async def start(self) -> None:
        for deployment in self.deployments.values():
            await deployment.start()

    async def stop(self) -> None:
        for deployment in list(self.deployments.values()):
            await deployment.stop()

    async def add(self, spec: ModelSpec, placement: Placement | None = None) -> ModelDeployment:
        """Start serving `spec` (its replicas start in the background)."""
        deployment = self.deployments.get(spec.key)
        if deployment is None:
            deployment = self.backend.create_deployment(spec, placement or builtin_placement(spec))
            self.deployments[spec.key] = deployment
            await deployment.start()
        return deployment

    async def restart(self, spec: ModelSpec) -> ModelDeployment:
        """Serve a changed `spec` under the same key: in place where the backend can (Ray
        Serve rolls its replicas over), else new replicas after the old ones stop."""
        deployment = self.deployments.get(spec.key)
        if deployment is not None and await deployment.replace(spec):
            return deployment
        await self.remove(spec.key)
        return await self.add(spec)

    async def remove(self, key: str) -> None:
        """Stop a model's replicas; requests in flight fail with the worker-lost error."""
        deployment = self.deployments.pop(key, None)
        if deployment is not None:
            await deployment.remove()

    @property
    def ready(self) -> bool:
        return all(d.ready for d in self.deployments.values())

    def info(self, key: str) -> ModelInfo | None:
        deployment = self.deployments.get(key)
        return deployment.info if deployment else None

    async def submit(
        self, key: str, request: InferenceRequest, ready_timeout_s: float | None = None
    ) -> Call:
        deployment = self.deployments.get(key)
        if deployment is None:
            raise ModelUnavailable(f"The model `{key}` has no instance; retry later.")
        timeout = self.ready_timeout_s if ready_timeout_s is None else ready_timeout_s
        return await deployment.submit(request, timeout)
