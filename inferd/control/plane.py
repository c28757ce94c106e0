"""The control plane of one gateway process: pools, registry, reconciler and the GPU
containers' manager, wired."""

from __future__ import annotations

from inferd.auth.keys import KeyVault
from inferd.billing.budget import Budget
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control.containers import ContainerManager
from inferd.control.pools import Pools
from inferd.control.reconciler import Reconciler
from inferd.control.registry import Registry
from inferd.runtime import Runtime
from inferd.store.db import Database
from inferd.weights import hub
from inferd.weights.lora import adapter_base_model

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
        budget: Budget,
    ) -> None:
        self.pools = Pools(settings)
        reserved = RESERVED_OWNERS | {spec.name.split("/", 1)[0] for spec in catalog}
        self.registry = Registry(db, vault, self.pools, settings.gpu_quota, reserved)
        self.reconciler = Reconciler(
            settings, self.registry, runtime, catalog, self.pools, ledger, budget
        )
        self.containers = ContainerManager(
            settings,
            db,
            vault,
            self.pools,
            self.registry,
            budget,
            self.reconciler.meter,
            self.used_gpus,
        )
        self.reconciler.held_by_containers = self.containers.held
        self.runtime = runtime
        self.catalog = catalog
        self.settings = settings

    async def start(self) -> None:
        await self.reconciler.start()
        await self.containers.start()

    async def close(self) -> None:
        await self.containers.close()
        await self.reconciler.close()

    def adapter_source(self, repo: str, token: str | None) -> tuple[str, str]:
        """(commit, base model) of a PEFT adapter repository; ValueError with a reason a
        user understands when it cannot be used here. Blocking (hub requests)."""
        endpoint = self.settings.hf_endpoint
        try:
            commit = hub.resolve_commit(repo, None, token, endpoint)
            folder = hub.fetch(
                repo, commit, token, endpoint=endpoint, dest_root=self.settings.model_cache / "hub"
            )
            if hub.repo_kind(folder) != "lora":
                raise ValueError(f"`{repo}` is not a PEFT LoRA adapter (adapter_config.json).")
        except hub.FetchError as exc:
            raise ValueError(exc.reason) from None
        base = adapter_base_model(folder)
        spec = self.catalog.find(base)
        if spec is None or spec.deploy_id is not None or "lora" not in spec.tags:
            takes = [s.name for s in self.catalog if "lora" in s.tags]
            raise ValueError(
                f"The adapter's base model `{base}` does not take adapters here; "
                f"these do: {', '.join(takes) or 'none'}."
            )
        return commit, spec.name

    def used_gpus(self) -> dict[str, int]:
        """GPUs (CPU slots) held by this process's running instances, per pool."""
        used: dict[str, int] = {}
        for deploy_id, record in self.reconciler.records.items():
            config = record.config
            deployment = self.runtime.deployments.get(deploy_id)
            if deployment is not None:
                held = len(deployment.replicas) * config.num_gpus
                used[config.gpu] = used.get(config.gpu, 0) + held
        return used
