"""GPU containers: what accounts rent (the database) made to match what podman runs.

    creating ──(seed written, podman create + start)──▶ starting ──(SSH answers)──▶ running
        │                                                  │                         │
        └──────────────▶ failed ◀──(exited, timeout)───────┴──(killed, vanished)─────┘
    DELETE, spending limit, maximum lifetime: ──▶ shutting_down ──(podman rm)──▶ deleted

Each gateway's manager drives only the containers of its own node (the podman it runs beside).
Every `container_reconcile_s` it lists podman's containers once and compares: a container the
database has but podman lost becomes `failed` with the reason; one podman has but the database
does not want (an orphan, a failed one's leftovers) is removed. Billing counts the seconds a
container was seen running (times its config's hourly price), so it stops at the last sighting.
State changes are compare-and-set, so a user's DELETE is never overwritten by an observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import select, update

from inferd.auth.keys import KeyVault
from inferd.billing.budget import Budget
from inferd.billing.ledger import CONTAINER_ROUTE
from inferd.config import Settings
from inferd.control.podman import (
    WHAT_TO_INSTALL,
    Limits,
    Network,
    Observed,
    Podman,
    PodmanError,
    missing_tools,
)
from inferd.control.pools import Pool, Pools, UnknownPool
from inferd.control.registry import DeployError, Registry
from inferd.control.uptime import UptimeMeter
from inferd.store.container_tables import ACTIVE_STATES, INACTIVE_STATES, Container
from inferd.store.db import Database
from inferd.store.models import as_utc, utcnow

log = logging.getLogger("inferd.containers")

GPU_CONFIG = re.compile(r"^([1-9][0-9]{0,2})x([A-Za-z0-9]+-[0-9]+GB)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_USER_DATA = 64 * 1024
SSH_PORT = 22
ORPHAN_SWEEP_S = 30.0  # with no container of ours live, podman is listed this often

# The container's entrypoint: real cloud-init on the NoCloud seed, then sshd as PID 1.
INIT_SH = """#!/bin/sh
mkdir -p /var/lib/cloud/seed/nocloud /etc/cloud/cloud.cfg.d
cp /seed/user-data /seed/meta-data /var/lib/cloud/seed/nocloud/
printf 'datasource_list: [NoCloud, None]\\nlocale: C.UTF-8\\n' \\
  > /etc/cloud/cloud.cfg.d/99-inferd.cfg
for stage in "init --local" "init" "modules --mode=config" "modules --mode=final"; do
  cloud-init $stage >/var/log/cloud-init-stage.log 2>&1 || echo "cloud-init $stage failed" >&2
done
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
"""


class ContainersUnavailable(Exception):
    """Podman (or the base image) is missing on this server: the API answers 503."""


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    id: str
    account_id: str
    name: str
    state: str
    gpu_config: str
    pool: str
    num_gpus: int
    price_per_hour: float
    container_image: str
    ip: str | None
    fail_reason: str | None
    created_at: datetime
    start_ts: datetime | None
    state_ts: datetime
    stop_ts: datetime | None


def parse_gpu_config(value: str) -> tuple[int, str]:
    """`NxTYPE-MEMGB` → (N, pool name); ValueError saying the expected form."""
    match = GPU_CONFIG.match(value)
    if match is None:
        raise ValueError(
            f"`gpu_config` must look like `1xA100-80GB` (count x pool name), not `{value[:80]}`."
        )
    return int(match.group(1)), match.group(2)


def gpu_configs(pool: Pool) -> list[int]:
    """The counts a pool is rented in: powers of two up to its size, and its size."""
    counts = {n for n in (1, 2, 4, 8, 16) if n <= pool.count}
    if pool.count:
        counts.add(pool.count)
    return sorted(counts)


def node_name(settings: Settings) -> str:
    """This gateway as a container host: the machine and the server's home (a restarted
    gateway finds its containers again)."""
    home = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()[:50]}:{home}"


class ContainerManager:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        vault: KeyVault,
        pools: Pools,
        registry: Registry,
        budget: Budget,
        meter: UptimeMeter,
        held_by_deployments: Callable[[], dict[str, int]],
    ) -> None:
        self.settings = settings
        self.db = db
        self.vault = vault
        self.pools = pools
        self.registry = registry
        self.budget = budget
        self.meter = meter
        self.held_by_deployments = held_by_deployments
        self.node = node_name(settings)
        self.root = settings.home / "containers"
        network = Network("inferd-ct", settings.container_bridge, settings.container_subnet)
        self.podman = Podman(self.root / "cni", network)
        self.unavailable: str | None = "GPU containers are off on this server (`containers`)."
        self._held: dict[str, int] = {}  # pool → GPUs held by this node's active containers
        self._counted: dict[str, float] = {}  # container id → monotonic time billed up to
        self._busy: dict[str, asyncio.Task[None]] = {}  # container id → its launch/removal
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._swept = -ORPHAN_SWEEP_S  # when podman was last listed

    # -- lifecycle of the manager ---------------------------------------------------------------

    async def start(self) -> None:
        if not self.settings.containers:
            return
        missing = missing_tools()
        if missing:
            self.unavailable = f"{', '.join(missing)} not found. {WHAT_TO_INSTALL}"
            log.warning("containers unavailable", extra={"missing": missing})
            return
        try:
            await self.podman.prepare()
        except (PodmanError, OSError) as exc:
            self.unavailable = f"The containers' network could not be set up ({exc})."
            log.error("containers unavailable", extra={"error": str(exc)})
            return
        self.unavailable = None
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="containers")

    async def close(self) -> None:
        """Stop managing; the containers keep running (a restarted gateway takes them up)."""
        if self._task is None:
            return  # never started (off, or podman missing)
        tasks = [self._task, *self._busy.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._bill_running(await self._observe_safely())

    def poke(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.container_reconcile_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception as exc:  # the database or podman may be briefly away
                log.error("container reconcile failed", extra={"error": type(exc).__name__})

    # -- what users ask (blocking: call through asyncio.to_thread) ------------------------------

    async def over_budget(self, account_id: str) -> bool:
        return bool(await self._over_budget({account_id}))

    def _available(self) -> None:
        if self.unavailable is not None:
            raise ContainersUnavailable(self.unavailable)

    def images(self) -> list[str]:
        return sorted(self.settings.container_images)

    def configs(self) -> list[tuple[str, Pool, int]]:
        """(gpu_config, pool, count) of every config this server rents."""
        return [(f"{n}x{pool.name}", pool, n) for pool in self.pools for n in gpu_configs(pool)]

    def free(self, pool: Pool) -> int:
        used = self.held_by_deployments().get(pool.name, 0) + self._held.get(pool.name, 0)
        return max(0, pool.count - used)

    def held(self, pool_name: str) -> int:
        return self._held.get(pool_name, 0)

    def create(
        self,
        account_id: str,
        name: str,
        gpu_config: str,
        image: str,
        user_data: str | None,
        over_budget: bool,
    ) -> str:
        self._available()
        if not _NAME.match(name):
            raise DeployError(
                400,
                "`name` must be 1-100 letters, digits, `.`, `_` or `-`.",
                "invalid_parameter",
                "name",
            )
        try:
            count, pool_name = parse_gpu_config(gpu_config)
            pool = self.pools.get(pool_name)
        except ValueError as exc:
            raise DeployError(400, str(exc), "invalid_parameter", "gpu_config") from None
        except UnknownPool as exc:
            raise DeployError(400, str(exc), "unknown_gpu", "gpu_config") from None
        if count not in gpu_configs(pool):
            offered = ", ".join(f"{n}x{pool.name}" for n in gpu_configs(pool)) or "none"
            raise DeployError(
                400,
                f"`{pool.name}` is rented as {offered}; not {count}.",
                "invalid_parameter",
                "gpu_config",
            )
        if image not in self.settings.container_images:
            raise DeployError(
                400,
                f"Unknown `container_image` `{image[:100]}`; this server offers: "
                f"{', '.join(self.images()) or 'none'}.",
                "invalid_parameter",
                "container_image",
            )
        check_user_data(user_data)
        if over_budget:
            raise DeployError(
                402, "The account's spending limit is used up: no new containers.", "over_budget"
            )
        container_id = "ctr-" + secrets.token_hex(8)
        with self.db.session() as s, s.begin():
            account = self.registry.lock_account(s, account_id)
            self.registry.check_quota(s, account, count, None)
            if self.free(pool) < count:
                raise DeployError(
                    503,
                    f"`{gpu_config}` is out of capacity: {self.free(pool)} of {pool.count} "
                    "free. Try again later or pick another config (GET /v1/containers/"
                    "gpu_availability).",
                    "out_of_capacity",
                    "gpu_config",
                )
            s.add(
                Container(
                    id=container_id,
                    account_id=account_id,
                    name=name,
                    state="creating",
                    gpu_config=gpu_config,
                    pool=pool.name,
                    num_gpus=count,
                    price_per_hour=round(pool.usd_per_hour * count, 6),
                    container_image=image,
                    node=self.node,
                    user_data=self.vault.encrypt(user_data or ""),
                )
            )
        self._held[pool.name] = self._held.get(pool.name, 0) + count
        log.info("container requested", extra={"container": container_id, "gpu": gpu_config})
        return container_id

    def list(self, account_id: str, active: bool) -> list[ContainerRecord]:
        states = ACTIVE_STATES if active else INACTIVE_STATES
        with self.db.session() as s:
            rows = s.scalars(
                select(Container)
                .where(Container.account_id == account_id)
                .where(Container.state.in_(states))
                .order_by(Container.created_at.desc(), Container.id)
            )
            return [_record(row) for row in rows]

    def get(self, account_id: str, container_id: str) -> ContainerRecord:
        with self.db.session() as s:
            return _record(self._own(s, account_id, container_id))

    def rename(self, account_id: str, container_id: str, name: str) -> ContainerRecord:
        if not _NAME.match(name):
            raise DeployError(
                400,
                "`name` must be 1-100 letters, digits, `.`, `_` or `-`.",
                "invalid_parameter",
                "name",
            )
        with self.db.session() as s, s.begin():
            row = self._own(s, account_id, container_id)
            row.name = name
            return _record(row)

    def terminate(self, account_id: str, container_id: str) -> ContainerRecord:
        """DELETE: a live container shuts down; a failed one is only marked deleted (its
        leftovers, if any, are removed by the next tick)."""
        with self.db.session() as s, s.begin():
            row = self._own(s, account_id, container_id)
            if row.state in ("creating", "starting", "running"):
                _set(row, "shutting_down")
            elif row.state == "failed":
                _set(row, "deleted")
                row.stop_ts = row.stop_ts or utcnow()
            return _record(row)

    def _own(self, s, account_id: str, container_id: str) -> Container:
        row = s.get(Container, container_id)
        if row is None or row.account_id != account_id:
            raise DeployError(
                404, f"No container `{container_id[:60]}`.", "not_found", "container_id"
            )
        return row

    # -- convergence ----------------------------------------------------------------------------

    async def tick(self) -> None:
        rows = await asyncio.to_thread(self._mine)
        now = time.monotonic()
        if not rows and not self._busy and now - self._swept < ORPHAN_SWEEP_S:
            self._held = {}
            return  # nothing to watch: podman is asked only now and then, for orphans
        self._swept = now
        seen = await self.podman.observe(self.node)
        held: dict[str, int] = {}
        for row in rows:
            held[row.pool] = held.get(row.pool, 0) + row.num_gpus
        self._held = held
        over = await self._over_budget({r.account_id for r in rows if r.state == "running"})
        self._bill_running(seen, {r.id: r for r in rows})
        for row in rows:
            if row.id in self._busy:
                continue
            observed = seen.get(row.id)
            if row.state == "creating":
                self._spawn(row.id, self._launch(row))
            elif row.state == "starting":
                await self._starting(row, observed)
            elif row.state == "running":
                await self._running(row, observed, over)
            elif row.state == "shutting_down":
                self._spawn(row.id, self._shut_down(row))
        wanted = {r.id for r in rows} | set(self._busy)
        for container_id in seen.keys() - wanted:
            log.info("orphan container removed", extra={"container": container_id})
            self._spawn(container_id, self._remove_only(container_id))
        for container_id in list(self._counted):
            if container_id not in wanted:
                del self._counted[container_id]
        for account_id, cost in self.meter.flush():
            await self.budget.charge(f"acct:{account_id}", cost)

    def _mine(self) -> list[Container]:
        with self.db.session() as s:
            rows = s.scalars(
                select(Container)
                .where(Container.node == self.node)
                .where(Container.state.in_(ACTIVE_STATES))
            )
            rows = list(rows)
            s.expunge_all()
            return rows

    async def _over_budget(self, account_ids: set[str]) -> set[str]:
        limits = await asyncio.to_thread(self.registry.spending_limits, account_ids)
        return {
            account_id
            for account_id, limit in limits.items()
            if await self.budget.spent(f"acct:{account_id}") >= limit
        }

    def _spawn(self, container_id: str, work) -> None:
        task = asyncio.create_task(work, name=f"container-{container_id}")
        self._busy[container_id] = task
        task.add_done_callback(lambda _: self._busy.pop(container_id, None))

    async def _launch(self, row: Container) -> None:
        """creating → starting: the seed (user data, instance id, entrypoint), then podman."""
        image = self.settings.container_images.get(row.container_image)
        try:
            if image is None or not await self.podman.image_exists(image):
                raise PodmanError(
                    f"The image `{row.container_image}` is not on this server "
                    "(`inferd containers build-image`)."
                )
            user_data = self.vault.decrypt(row.user_data) if row.user_data else ""
            seed = await asyncio.to_thread(self._write_seed, row.id, user_data)
            await self.podman.remove(row.id)  # a launch cut short by a restart
            await self.podman.create(row.id, self.node, image, seed, self._limits(row))
            await self.podman.start(row.id)
            ip = await self.podman.ip(row.id)
        except PodmanError as exc:
            await self._fail(row, f"The container could not start: {exc}")
            return
        await self._move(row.id, "creating", "starting", ip=ip)

    def _limits(self, row: Container) -> Limits:
        s = self.settings
        cpus = min(row.num_gpus * s.container_cpus_per_gpu, float(os.cpu_count() or 1))
        return Limits(row.num_gpus * s.container_memory_mb_per_gpu, cpus, s.container_pids_limit)

    def _seed_dir(self, container_id: str) -> Path:
        return self.root / "seeds" / container_id

    def _write_seed(self, container_id: str, user_data: str) -> Path:
        seed = self._seed_dir(container_id)
        seed.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(seed.parent, 0o700)
        files = {
            "user-data": (user_data, 0o600),
            "meta-data": (f"instance-id: {container_id}\nlocal-hostname: {container_id}\n", 0o600),
            "init.sh": (INIT_SH, 0o700),
        }
        for name, (text, mode) in files.items():
            path = seed / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        return seed

    def _forget_seed(self, container_id: str) -> None:
        shutil.rmtree(self._seed_dir(container_id), ignore_errors=True)

    async def _starting(self, row: Container, observed: Observed | None) -> None:
        if observed is None:
            await self._fail(row, "The container vanished while starting.")
        elif observed.state in ("exited", "stopped", "dead"):
            await self._fail(
                row, f"The container exited while starting (code {observed.exit_code})."
            )
        elif observed.state == "running" and row.ip and await ssh_answers(row.ip):
            if await self._move(row.id, "starting", "running", start_ts=utcnow(), user_data=None):
                self._counted[row.id] = time.monotonic()
                await asyncio.to_thread(self._forget_seed, row.id)
                log.info("container running", extra={"container": row.id})
        elif utcnow() - as_utc(row.state_ts) > timedelta(
            seconds=self.settings.container_start_timeout_s
        ):
            await self._fail(
                row,
                f"SSH did not answer within {self.settings.container_start_timeout_s:g} s "
                "(check the cloud-init user data).",
            )

    async def _running(self, row: Container, observed: Observed | None, over: set[str]) -> None:
        if observed is None or observed.state != "running":
            reason = (
                "The container vanished (removed outside inferd)."
                if observed is None
                else f"The container stopped (state {observed.state}, exit code "
                f"{observed.exit_code})."
            )
            await self._fail(row, reason)
            return
        # Billed from now on (after a gateway restart: from its first sighting here).
        self._counted.setdefault(row.id, time.monotonic())
        reason = None
        if row.account_id in over:
            reason = "Shut down: the account's spending limit is used up."
        elif row.start_ts is not None and utcnow() - as_utc(row.start_ts) > timedelta(
            seconds=self.settings.container_max_lifetime_s
        ):
            reason = (
                f"Shut down: the maximum lifetime ({self.settings.container_max_lifetime_s:g} s)"
                " was reached."
            )
        if reason and await self._move(row.id, "running", "shutting_down", fail_reason=reason):
            log.info("container shut down", extra={"container": row.id, "reason": reason})
            self.poke()

    def _bill_running(
        self, seen: dict[str, Observed], rows: dict[str, Container] | None = None
    ) -> None:
        """Running seconds since the last count, for every container podman shows running."""
        now = time.monotonic()
        for container_id, since in list(self._counted.items()):
            observed = seen.get(container_id)
            row = rows.get(container_id) if rows is not None else None
            if observed is None or observed.state != "running":
                del self._counted[container_id]  # billed up to the last time it was seen
                continue
            self._counted[container_id] = now
            if row is None:
                row = self._row(container_id)
                if row is None:
                    continue
            self.meter.add(
                container_id,
                row.account_id,
                f"container/{container_id}",
                now - since,
                row.price_per_hour,
                route=CONTAINER_ROUTE,
                now=now,
            )

    def _row(self, container_id: str) -> Container | None:
        with self.db.session() as s:
            row = s.get(Container, container_id)
            if row is not None:
                s.expunge(row)
            return row

    async def _observe_safely(self) -> dict[str, Observed]:
        try:
            return await self.podman.observe(self.node)
        except PodmanError:
            return {}

    async def _shut_down(self, row: Container) -> None:
        self._bill_running(await self._observe_safely(), {row.id: row})
        self._counted.pop(row.id, None)
        try:
            await self.podman.remove(row.id)
        except PodmanError as exc:
            log.error("container not removed", extra={"container": row.id, "error": str(exc)})
            return  # tried again next tick
        await asyncio.to_thread(self._forget_seed, row.id)
        await self._move(row.id, "shutting_down", "deleted", stop_ts=utcnow(), user_data=None)
        log.info("container deleted", extra={"container": row.id})

    async def _remove_only(self, container_id: str) -> None:
        with contextlib.suppress(PodmanError):
            await self.podman.remove(container_id)
        await asyncio.to_thread(self._forget_seed, container_id)

    async def _fail(self, row: Container, reason: str) -> None:
        self._counted.pop(row.id, None)
        moved = await self._move(
            row.id, row.state, "failed", fail_reason=reason, stop_ts=utcnow(), user_data=None
        )
        if moved:
            log.warning("container failed", extra={"container": row.id, "reason": reason})
        with contextlib.suppress(PodmanError):
            await self.podman.remove(row.id)
        await asyncio.to_thread(self._forget_seed, row.id)

    async def _move(self, container_id: str, old: str, new: str, **values) -> bool:
        def write() -> bool:
            with self.db.session() as s, s.begin():
                result = s.execute(
                    update(Container)
                    .where(Container.id == container_id)
                    .where(Container.state == old)
                    .values(state=new, state_ts=utcnow(), **values)
                )
                return bool(result.rowcount)  # type: ignore[attr-defined]

        return await asyncio.to_thread(write)


def check_user_data(user_data: str | None) -> None:
    if user_data is None:
        return
    if len(user_data.encode()) > MAX_USER_DATA:
        raise DeployError(
            400,
            f"`cloud_init_user_data` is over {MAX_USER_DATA // 1024} KiB.",
            "invalid_parameter",
            "cloud_init_user_data",
        )
    if user_data.startswith("#cloud-config"):
        try:
            parsed = yaml.safe_load(user_data)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise DeployError(
                400,
                f"`cloud_init_user_data` is not valid YAML{where}.",
                "invalid_parameter",
                "cloud_init_user_data",
            ) from None
        if parsed is not None and not isinstance(parsed, dict):
            raise DeployError(
                400,
                "`cloud_init_user_data` (#cloud-config) must be a YAML mapping.",
                "invalid_parameter",
                "cloud_init_user_data",
            )


async def ssh_answers(ip: str, timeout: float = 1.0) -> bool:
    """An SSH server's banner on ip:22."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, SSH_PORT), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        banner = await asyncio.wait_for(reader.readline(), timeout)
        return banner.startswith(b"SSH-")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _set(row: Container, state: str) -> None:
    row.state = state
    row.state_ts = datetime.now(UTC)


def _record(row: Container) -> ContainerRecord:
    return ContainerRecord(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        state=row.state,
        gpu_config=row.gpu_config,
        pool=row.pool,
        num_gpus=row.num_gpus,
        price_per_hour=row.price_per_hour,
        container_image=row.container_image,
        ip=row.ip if row.state == "running" else None,
        fail_reason=row.fail_reason,
        created_at=as_utc(row.created_at),
        start_ts=as_utc(row.start_ts) if row.start_ts else None,
        state_ts=as_utc(row.state_ts),
        stop_ts=as_utc(row.stop_ts) if row.stop_ts else None,
    )
