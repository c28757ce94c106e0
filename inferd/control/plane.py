"""The control plane of one gateway process: pools, registry, reconciler, routes and the GPU
containers' manager, wired."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from inferd.auth.keys import KeyVault
from inferd.billing.budget import Budget
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control.containers import ContainerManager
from inferd.control.pools import Pools
from inferd.control.reconciler import Reconciler
from inferd.control.registry import Registry
from inferd.control.routes import RouteRegistry
from inferd.runtime import Runtime
from inferd.store.db import Database
from inferd.weights import hub
from inferd.weights.lora import adapter_base_model

log = logging.getLogger("inferd.control")

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
        self.routes = RouteRegistry(db, vault, catalog, settings.routes)
        self.runtime = runtime
        self.catalog = catalog
        self.settings = settings
        self._routes_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.publish_routes()
        await self.reconciler.start()
        await self.containers.start()
        self._routes_task = asyncio.create_task(self._refresh_routes(), name="routes")

    async def close(self) -> None:
        if self._routes_task is not None:
            self._routes_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._routes_task
        await self.containers.close()
        await self.reconciler.close()

    async def publish_routes(self) -> None:
        """Serve the routes as the database and config hold them now: at start, after a
        change through this gateway, and every reconcile interval (another gateway's)."""
        routes = await asyncio.to_thread(self.routes.load)
        try:
            self.catalog.publish_routes(routes)
        except ValueError as exc:  # a deprecation whose replacement is gone since: skip those
            log.error("deprecation routes not applied", extra={"error": str(exc)})
            self.catalog.publish_routes(r for r in routes if r.deprecated_at is None)

    async def _refresh_routes(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_s)
            try:
                await self.publish_routes()
            except Exception as exc:  # the database may be briefly away: next round
                log.error("routes not refreshed", extra={"error": type(exc).__name__})

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
