"""Makes what runs in this gateway process match what the database wants.

Every tick it reads the live versions (all accounts), and for each one converges:

  desired running:  initializing → (resolve the revision to a commit) → downloading → (weights
                    in the cache) → deploying → (a replica answered Ready) → running
  desired stopped:  replicas stopped → stopped
  desired deleted:  replicas stopped → deleted

Status is written from what was observed, with a reason when something failed; a version
whose status a user changed meanwhile is left alone (compare-and-set in the registry). The
catalog gets a fresh snapshot every tick, so a new or changed deployment is served within one
interval without a restart. On the local backend each gateway process runs the replicas it
serves; a version the database says is running but this process has not started (after a
restart) is started again from its cached weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from inferd.billing.budget import Budget
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog, DeployedVersion, ModelSpec
from inferd.catalog.spec import Price, Weights
from inferd.config import Settings
from inferd.control import builtins
from inferd.control.autoscaler import ScaleState, decide, wanted_instances
from inferd.control.pools import Pools, UnknownPool
from inferd.control.registry import Registry, VersionRecord
from inferd.control.uptime import UptimeMeter
from inferd.runtime import Runtime
from inferd.runtime.backend import AdapterError, Autoscale, ModelDeployment, Placement
from inferd.weights import hub
from inferd.weights.lora import converted_adapter
from inferd.weights.resolve import resolve_weights

log = logging.getLogger("inferd.control")

# Engine settings for deployed LLMs on llama.cpp: one slot per request in a batch.
LLAMACPP_OPTIONS = {"n_threads": 2, "kv_tokens": 16384, "batch_tokens": 512, "flash_attn": True}
LOCAL_RETRY_S = 30.0  # a version that failed in this process is retried here after this
LLM_TAGS = ["chat", "completion", "streaming", "logprobs", "tools", "json_mode"]


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        runtime: Runtime,
        catalog: Catalog,
        pools: Pools,
        ledger: UsageLedger,
        budget: Budget,
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.registry = registry
        self.runtime = runtime
        self.catalog = catalog
        self.pools = pools
        self.progress: dict[str, tuple[int, int]] = {}  # deploy_id → bytes downloaded, total
        self.records: dict[str, VersionRecord] = {}  # deploy_id → version, as of the last tick
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._scale: dict[str, ScaleState] = {}
        self._adapters: set[str] = set()  # deploy_ids of adapters loaded into their base
        self.notes: dict[str, str] = {}  # deploy_id → why fewer instances run than wanted
        self._over_budget: set[str] = set()  # accounts whose spending limit is used up
        # Gateways sharing a database elect one status writer (a lease renewed every tick). A
        # restarted gateway (same host, port and home) is the same holder: it resumes at once.
        self.holder = f"{socket.gethostname()}:{settings.port}:{settings.home.resolve()}"[:64]
        self.leader = False
        self._lease_ttl_s = max(5.0, 5 * settings.reconcile_interval_s)
        self._local_failures: dict[str, float] = {}  # deploy_id → when it failed here
        self._no_room: set[str] = set()  # deploy_ids waiting for room in their pool
        self.meter = UptimeMeter(ledger, settings.uptime_flush_s)
        # GPUs of a pool this node's GPU containers hold (set by the control plane).
        self.held_by_containers: Callable[[str], int] = lambda pool: 0

    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def close(self) -> None:
        for task in [self._task, *self._preparing.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Uptime up to the shutdown; the instances stop with the runtime.
        for deploy_id, record in self.records.items():
            deployment = self.runtime.deployments.get(deploy_id)
            if deployment is not None:
                self._meter(record, deployment)
        for account_id, cost in self.meter.flush(force=True):
            await self.budget.charge(f"acct:{account_id}", cost)

    async def changed(self) -> None:
        """A user changed a deployment through this gateway: serve it as it is now, and
        converge at once rather than at the next tick."""
        await self.publish()
        self.poke()

    def poke(self) -> None:
        """Converge now (a user changed a deployment through this process)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception as exc:  # the database may be briefly away: try next tick
                log.error("reconcile failed", extra={"error": type(exc).__name__})

    async def tick(self) -> None:
        self.leader = await asyncio.to_thread(
            self.registry.hold_lease, self.holder, self._lease_ttl_s
        )
        self.runtime.backend.lead(self.leader)
        await self._sync_builtins()
        records = await asyncio.to_thread(self.registry.live)
        live = {r.deploy_id for r in records}
        self.records = {r.deploy_id: r for r in records}
        await self._check_budgets({r.account_id for r in records if r.config.kind == "llm"})
        for record in records:
            await self._converge(record)
        # Replicas of versions deleted meanwhile (gone from the live list).
        for key, deployment in list(self.runtime.deployments.items()):
            if deployment.spec.deploy_id is not None and key not in live:
                await self.runtime.remove(key)
        self._adapters &= live
        for account_id, cost in self.meter.flush():
            await self.budget.charge(f"acct:{account_id}", cost)
        await self.publish()

    async def _sync_builtins(self) -> None:
        """Serve the built-in models as the database has them now (another process may have
        seeded a changed catalog): new ones start, removed ones stop, a changed engine, weights
        or options restarts the model's replicas, and anything else is only a catalog change."""
        specs = await asyncio.to_thread(builtins.load, self.registry.db)
        old = {spec.name: spec for spec in self.catalog.declared()}
        new = {spec.name: spec for spec in specs}
        if {n: builtins.declaration(s) for n, s in old.items()} == {
            n: builtins.declaration(s) for n, s in new.items()
        }:
            return
        try:
            self.catalog.replace_builtins(specs)
        except ValueError as exc:  # seeded by an older or newer inferd: keep serving what runs
            log.error("built-in models not applied", extra={"error": str(exc)})
            return
        for name, spec in old.items():
            if name in new and builtins.restarts(spec, new[name]):
                log.info("built-in model restarted", extra={"model": name})
                await self.runtime.restart(new[name])
            elif name not in new:
                log.info("built-in model stopped", extra={"model": name})
                await self.runtime.remove(name)
            else:
                continue
            # Adapters loaded into the old replicas load again into the new ones.
            self._adapters -= {
                deploy_id
                for deploy_id, record in self.records.items()
                if record.config.base_model == name
            }
        for name, spec in new.items():
            if name not in self.runtime.deployments:
                log.info("built-in model started", extra={"model": name})
                await self.runtime.add(spec)

    async def _check_budgets(self, account_ids: set[str]) -> None:
        """Accounts past their spending limit: their deployments go to zero instances and
        requests are refused with 402 (by the request path's budget check)."""
        limits = await asyncio.to_thread(self.registry.spending_limits, account_ids)
        over = set()
        for account_id, limit in limits.items():
            if await self.budget.spent(f"acct:{account_id}") >= limit:
                over.add(account_id)
        self._over_budget = over

    async def publish(self) -> None:
        """Give the catalog the versions as the database has them now: after every status
        this process writes, and after a user's change, so requests see it at once."""
        records = await asyncio.to_thread(self.registry.live)
        self.catalog.publish(
            DeployedVersion(
                self._spec(r),
                r.status,
                r.fail_reason,
                r.settings.cold_start_timeout_s,
            )
            for r in records
        )

    async def _converge(self, record: VersionRecord) -> None:
        if record.config.kind == "lora":
            await self._converge_adapter(record)
            return
        deploy_id = record.deploy_id
        if record.desired in ("stopped", "deleted"):
            self._cancel_prepare(deploy_id)
            deployment = self.runtime.deployments.get(deploy_id)
            if deployment is not None:
                self._meter(record, deployment)  # the last seconds before the stop
                await self.runtime.remove(deploy_id)
            self._scale.pop(deploy_id, None)
            await self._status(record, record.desired)
            return
        if record.status == "failed":
            return  # stays failed, with its reason, until a user starts it again
        deployment = self.runtime.deployments.get(deploy_id)
        if deployment is None:
            failed_at = self._local_failures.get(deploy_id)
            recent = failed_at is not None and time.monotonic() - failed_at < LOCAL_RETRY_S
            if recent and record.status != "initializing":  # a user's start retries at once
                return  # failed here while it runs elsewhere: retried after a pause
            if deploy_id in self._no_room:
                if self._fits(record, None) == 0:
                    return  # still waiting, as its status reason says
                self._no_room.discard(deploy_id)
                self.notes.pop(deploy_id, None)
            if deploy_id not in self._preparing:
                self._preparing[deploy_id] = asyncio.create_task(
                    self._prepare(record), name=f"prepare-{deploy_id}"
                )
            return
        if deployment.failure is not None:
            await self._status(record, "failed", deployment.failure)
            await self.runtime.remove(deploy_id)
            return
        if deployment.ready:
            await self._status(record, "running", only_from=("deploying", "running"))
        self._meter(record, deployment)
        if deployment.self_scaling:
            # Ray Serve sizes the instances from the settings; the cluster decides placement.
            await deployment.configure(self._placement(record))
            self._note_paused(record)
        elif record.status == "running":
            await self._autoscale(record, deployment)

    async def _converge_adapter(self, record: VersionRecord) -> None:
        """A LoRA adapter lives in its base model's replicas: loaded into the running workers
        (no restart, no copy of the base), unloaded when stopped or deleted."""
        deploy_id = record.deploy_id
        base = self.runtime.deployments.get(record.config.base_model or "")
        if record.desired in ("stopped", "deleted"):
            self._cancel_prepare(deploy_id)
            if deploy_id in self._adapters and base is not None:
                with contextlib.suppress(Exception):  # a base that lost it holds nothing
                    await base.unload_adapter(deploy_id)
            self._adapters.discard(deploy_id)
            await self._status(record, record.desired)
            return
        if record.status == "failed" or deploy_id in self._preparing:
            return
        if deploy_id not in self._adapters:
            self._preparing[deploy_id] = asyncio.create_task(
                self._load_adapter(record), name=f"adapter-{deploy_id}"
            )

    async def _load_adapter(self, record: VersionRecord) -> None:
        deploy_id, config = record.deploy_id, record.config
        try:
            base_spec = self.catalog.find(config.base_model or "")
            base = self.runtime.deployments.get(config.base_model or "")
            if base_spec is None or base is None or base_spec.weights is None:
                raise hub.FetchError(f"The base model `{config.base_model}` is not served here.")
            token = await asyncio.to_thread(self.registry.token, deploy_id)
            folder = await asyncio.to_thread(
                hub.fetch,
                config.repo,
                config.commit or "",
                token,
                endpoint=self.settings.hf_endpoint,
                dest_root=self.settings.model_cache / "hub",
            )
            await self._status(record, "deploying", only_from=("initializing", "deploying"))
            base_gguf = await asyncio.to_thread(resolve_weights, base_spec.weights)
            try:
                path = await asyncio.to_thread(converted_adapter, folder, base_gguf)
            except ValueError as exc:  # the converter's reasons are written for users
                raise hub.FetchError(str(exc)) from None
            await base.load_adapter(deploy_id, str(path))
            self._adapters.add(deploy_id)
            await self._status(record, "running", only_from=("deploying", "running"))
        except hub.FetchError as exc:
            await self._status(record, "failed", exc.reason)
        except AdapterError as exc:
            await self._status(record, "failed", exc.failed.message)
        except Exception as exc:
            log.error(
                "adapter failed", extra={"model": record.full_name, "error": type(exc).__name__}
            )
            await self._status(
                record, "failed", f"Could not load the adapter: {type(exc).__name__}."
            )
        finally:
            self._preparing.pop(deploy_id, None)
            self.poke()

    def _placement(self, record: VersionRecord) -> Placement:
        settings, config = record.settings, record.config
        pool = self.pools.get(config.gpu)
        on_gpu = not pool.runs_on_cpu
        return Placement(
            autoscale=Autoscale(
                min_instances=settings.min_instances,
                max_instances=settings.max_instances,
                scale_up_window_s=settings.scale_up_window_s,
                scale_down_window_s=settings.scale_down_window_s,
                scale_to_zero_s=settings.scale_to_zero_s,
            ),
            max_batch_size=config.max_batch_size,
            pool=None if pool.name.startswith("CPU-") else pool.name,
            num_gpus=config.num_gpus if on_gpu else 0,
            num_cpus=pool.ray_num_cpus,
            paused=record.account_id in self._over_budget,
        )

    def _note_paused(self, record: VersionRecord) -> bool:
        if record.account_id in self._over_budget:
            self.notes[record.deploy_id] = (
                "The account's spending limit is used up: instances are stopped and new ones "
                "refused (402) until the limit is raised."
            )
            return True
        self.notes.pop(record.deploy_id, None)
        return False

    async def _autoscale(self, record: VersionRecord, deployment: ModelDeployment) -> None:
        now = time.monotonic()
        settings, config = record.settings, record.config
        if self._note_paused(record):
            deployment.scale_from_zero = False
            if deployment.replicas:
                self._meter(record, deployment)
                await deployment.scale_to(0)
            return
        wanted = wanted_instances(
            deployment.load(), config.max_batch_size, settings, now - deployment.last_used
        )
        fits = self._fits(record, deployment)
        # A request at zero instances starts one only if the pool has room for it.
        deployment.scale_from_zero = fits > 0
        if fits < max(wanted, settings.min_instances):
            self.notes[record.deploy_id] = (
                f"{max(wanted, settings.min_instances)} instances wanted; only {fits} fit in "
                f"{config.gpu} now. Only running instances are billed."
            )
        else:
            self.notes.pop(record.deploy_id, None)
        state = self._scale.setdefault(record.deploy_id, ScaleState())
        if len(deployment.replicas) > fits:  # over the pool (it shrank, or others grew first)
            target = fits
        else:
            target = decide(len(deployment.replicas), min(wanted, fits), settings, state, now)
        if target != len(deployment.replicas):
            log.info(
                "scaling",
                extra={
                    "model": record.full_name,
                    "deploy_id": record.deploy_id,
                    "instances": target,
                },
            )
            self._meter(record, deployment)
            await deployment.scale_to(target)

    def _fits(self, record: VersionRecord, deployment: ModelDeployment | None) -> int:
        """Instances of this version the pool can hold next to this process's others (on a
        shared cluster, the cluster's scheduler decides: what does not fit stays pending)."""
        pool = self.pools.get(record.config.gpu)
        if self.runtime.backend.shared:
            return record.settings.max_instances
        held = 0
        for deploy_id, other_record in self.records.items():
            config = other_record.config
            other = self.runtime.deployments.get(deploy_id)
            if other is not None and other is not deployment and config.gpu == pool.name:
                held += len(other.replicas) * config.num_gpus
        held += self.held_by_containers(pool.name)
        return max(0, (pool.count - held) // record.config.num_gpus)

    def _meter(self, record: VersionRecord, deployment: ModelDeployment) -> None:
        if self.runtime.backend.shared and not self.leader:
            return  # instances every gateway shares are billed once, by the leader
        pool = self.pools.get(record.config.gpu)
        self.meter.observe(
            record.deploy_id,
            record.account_id,
            record.full_name,
            deployment,
            pool.usd_per_hour * record.config.num_gpus,
        )

    async def _prepare(self, record: VersionRecord) -> None:
        """Resolve, download, start replicas; a failure becomes `failed` with its reason."""
        deploy_id = record.deploy_id
        try:
            config = record.config
            token = await asyncio.to_thread(self.registry.token, deploy_id)
            endpoint = self.settings.hf_endpoint
            commit = config.commit
            if commit is None:
                commit = await asyncio.to_thread(
                    hub.resolve_commit, config.repo, config.revision, token, endpoint
                )
                await asyncio.to_thread(self.registry.set_commit, deploy_id, commit)
            await self._status(record, "downloading", only_from=("initializing", "downloading"))

            def progress(done: int, total: int) -> None:
                self.progress[deploy_id] = (done, total)

            folder = await asyncio.to_thread(
                hub.fetch,
                config.repo,
                commit,
                token,
                endpoint=endpoint,
                dest_root=self.settings.model_cache / "hub",
                progress=progress,
            )
            spec = self._spec(record, folder)
            await self._status(
                record, "deploying", only_from=("initializing", "downloading", "running")
            )
            # One instance at least (a broken model fails now), at most what the pool holds;
            # with no room at all it waits in `deploying` and says why.
            fits = self._fits(record, None)
            if fits == 0:
                self._no_room.add(deploy_id)
                pool = self.pools.get(record.config.gpu)
                self.notes[deploy_id] = (
                    f"Waiting for room: all {pool.count} GPUs of {pool.name} are held by other "
                    "instances. Nothing is billed until an instance runs."
                )
                return
            spec = spec.model_copy(update={"replicas": max(1, min(spec.replicas, fits))})
            fresh = await asyncio.to_thread(self.registry.get, record.account_id, deploy_id)
            if fresh.desired == "running":
                await self.runtime.add(spec, self._placement(record))
        except hub.FetchError as exc:
            await self._status(record, "failed", exc.reason)
        except UnknownPool as exc:
            await self._status(record, "failed", str(exc))
        except Exception as exc:
            log.error(
                "deploy failed", extra={"model": record.full_name, "error": type(exc).__name__}
            )
            await self._status(record, "failed", f"Could not deploy: {type(exc).__name__}.")
        finally:
            self._preparing.pop(deploy_id, None)
            self.progress.pop(deploy_id, None)
            self.poke()

    def _spec(self, record: VersionRecord, folder: Path | None = None) -> ModelSpec:
        """The runtime's spec of a version; `folder` is its downloaded repository (None
        when only naming it for the catalog)."""
        config = record.config
        if config.kind == "lora":
            base = self.catalog.find(config.base_model or "")
            return ModelSpec(
                name=record.full_name,
                task="text-generation",
                engine="llm",
                weights=Weights(folder="."),
                context_length=base.context_length if base else 2048,
                price=base.price if base else Price(),  # per token, at the base's price
                tags=base.tags if base else LLM_TAGS,
                description=f"{record.full_name}: LoRA adapter {config.repo} on "
                f"{config.base_model}.",
                deploy_id=record.deploy_id,
                account_id=record.account_id,
                version=record.version,
                adapter_of=config.base_model,
            )
        weights = None
        backend = "llamacpp"
        options: dict = {}
        if folder is not None:
            kind = hub.repo_kind(folder)
            if kind == "gguf":
                weights = Weights(folder=str(hub.gguf_files(folder)[0]))
            elif kind == "safetensors":
                backend = "transformers"
                weights = Weights(folder=str(folder))
            else:
                raise hub.FetchError(f"`{config.repo}` is a LoRA adapter; deploy it as one.")
            if backend == "llamacpp":
                options = {**LLAMACPP_OPTIONS, "max_seqs": config.max_batch_size}
                if not self.pools.get(config.gpu).runs_on_cpu:
                    options["n_gpu_layers"] = -1
            else:
                options = {"n_threads": 2, "max_seqs": min(config.max_batch_size, 8)}
        return ModelSpec(
            name=record.full_name,
            task="text-generation",
            engine="llm",
            backend=backend,
            weights=weights or Weights(folder="."),
            context_length=4096,
            # Dedicated instances are billed by uptime; their tokens are not charged again.
            price=Price(),
            replicas=max(1, min(record.settings.min_instances or 1, 64)),
            tags=LLM_TAGS,
            description=f"{record.full_name} v{record.version}, from {config.repo}.",
            options=options,
            deploy_id=record.deploy_id,
            account_id=record.account_id,
            version=record.version,
        )

    def _cancel_prepare(self, deploy_id: str) -> None:
        if deploy_id in self._no_room:
            self._no_room.discard(deploy_id)
            self.notes.pop(deploy_id, None)
        task = self._preparing.pop(deploy_id, None)
        if task is not None:
            task.cancel()

    async def _status(
        self,
        record: VersionRecord,
        status: str,
        reason: str | None = None,
        *,
        only_from: tuple[str, ...] | None = None,
    ) -> None:
        if status == "failed":
            self._local_failures[record.deploy_id] = time.monotonic()
        if not self.leader:
            return  # another gateway writes status; this one runs its own instances
        changed = await asyncio.to_thread(
            self.registry.set_status,
            record.deploy_id,
            status,  # type: ignore[arg-type]
            reason,
            only_from=only_from,
        )
        if changed:
            await self.publish()
            log.info(
                "deployment status",
                extra={
                    "model": record.full_name,
                    "deploy_id": record.deploy_id,
                    "to_status": status,
                    "reason": reason,
                },
            )

    def instances(self, deploy_id: str) -> tuple[int, int]:
        """(running, pending) replicas of a version in this process (on a shared cluster,
        everywhere)."""
        deployment = self.runtime.deployments.get(deploy_id)
        if deployment is None:
            return 0, 1 if deploy_id in self._preparing else 0
        running = sum(1 for r in deployment.replicas if r.ready)
        return running, len(deployment.replicas) - running

    def instance_list(self, deploy_id: str) -> list[dict]:
        """Each instance's id, state and node (the node id on Ray; the host name locally)."""
        deployment = self.runtime.deployments.get(deploy_id)
        return deployment.instances() if deployment is not None else []

    def note(self, deploy_id: str) -> str | None:
        """Why fewer instances run than wanted, if anything says."""
        note = self.notes.get(deploy_id)
        if note is None:
            deployment = self.runtime.deployments.get(deploy_id)
            note = deployment.note if deployment is not None else None
        return note
