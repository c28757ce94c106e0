"""The control plane of one gateway process: pools, registry and reconciler, wired."""

from __future__ import annotations

from inferd.auth.keys import KeyVault
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control.pools import Pools
from inferd.control.reconciler import Reconciler
from inferd.control.registry import Registry
from inferd.runtime import Runtime
from inferd.store.db import Database

# Owners of built-in models no account may take (the catalog's own owners are added).
RESERVED_OWNERS = {"inferd", "admin", "deploy", "v1", "models"}


class ControlPlane:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        vault: KeyVault,
        runtime: Runtime,
        catalog: Catalog,
        ledger: UsageLedger,
    ) -> None:
        self.pools = Pools(settings)
        reserved = RESERVED_OWNERS | {spec.name.split("/", 1)[0] for spec in catalog}
        self.registry = Registry(db, vault, self.pools, settings.gpu_quota, reserved)
        self.reconciler = Reconciler(settings, self.registry, runtime, catalog, self.pools, ledger)
        self.runtime = runtime

    async def start(self) -> None:
        await self.reconciler.start()

    async def close(self) -> None:
        await self.reconciler.close()

    def used_gpus(self) -> dict[str, int]:
        """GPUs (CPU slots) held by this process's running instances, per pool."""
        used: dict[str, int] = {}
        for deploy_id, config in self.reconciler.configs.items():
            deployment = self.runtime.deployments.get(deploy_id)
            if deployment is not None:
                held = len(deployment.replicas) * config.num_gpus
                used[config.gpu] = used.get(config.gpu, 0) + held
        return used
