"""The model registry: deployments and their versions, in the database (the source of truth).

A POST with a model name the account already deployed creates a new version of it. Versions
are immutable except for their scaling settings, their desired state (running, stopped,
deleted: what users ask for) and their status (what the reconciler observed, with a reason).
Writes that count GPUs against the account's quota lock the account row first, so two
gateways creating at once cannot both pass the check.

Synchronous (SQLAlchemy sessions): callers on the event loop use `asyncio.to_thread`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inferd.auth.keys import KeyVault
from inferd.control.pools import Pools, UnknownPool
from inferd.store.container_tables import ACTIVE_STATES, Container
from inferd.store.db import Database
from inferd.store.models import Account, ControlLease, Deployment, DeploymentVersion, as_utc

Status = Literal[
    "initializing", "downloading", "deploying", "running", "stopped", "failed", "deleted"
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
Desired = Literal["running", "stopped", "deleted"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class DeployError(Exception):
    """A request the registry refuses: `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class ScaleSettings(BaseModel):
    """What a user may change on a running version."""

    model_config = ConfigDict(extra="ignore")

    min_instances: int = Field(default=0, ge=0, le=64)
    max_instances: int = Field(default=1, ge=1, le=64)
    # Autoscaling windows: scale up after load stays high this long, down after it stays low,
    # to zero after no request this long (only with min_instances 0).
    scale_up_window_s: float = Field(default=5.0, ge=0, le=3600)
    scale_down_window_s: float = Field(default=60.0, ge=0, le=86400)
    scale_to_zero_s: float = Field(default=300.0, ge=0, le=86400)
    cold_start_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> ScaleSettings:
        if self.max_instances < self.min_instances:
            raise ValueError("max_instances must be at least min_instances")
        return self


class VersionConfig(BaseModel):
    """The immutable part of a version."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["llm", "lora"]
    gpu: str
    num_gpus: int = 1
    max_batch_size: int = 16
    repo: str
    revision: str | None = None  # as asked (branch, tag, sha; None: the default branch)
    commit: str | None = None  # what it resolved to, set once by the reconciler
    base_model: str | None = None  # a LoRA's base


@dataclass(frozen=True, slots=True)
class VersionRecord:
    deploy_id: str
    deployment_id: str
    account_id: str
    full_name: str
    version: int
    config: VersionConfig
    settings: ScaleSettings
    desired: Desired
    status: Status
    fail_reason: str | None
    created_at: datetime
    updated_at: datetime
    has_secret: bool


class Registry:
    def __init__(
        self, db: Database, vault: KeyVault, pools: Pools, quota: int, reserved: set[str]
    ) -> None:
        self.db = db
        self.vault = vault
        self.pools = pools
        self.default_quota = quota
        self.reserved = {r.lower() for r in reserved}

    # -- writes from users ----------------------------------------------------------------------

    def create(
        self,
        account_id: str,
        model_name: str,
        config: VersionConfig,
        settings: ScaleSettings,
        token: str | None,
    ) -> VersionRecord:
        """A new deployment, or a new version of the account's deployment of that name."""
        with self.db.session() as s, s.begin():
            account = self.lock_account(s, account_id)
            owner = self._owner(account)
            name = model_name.removeprefix(owner + "/")
            if not _NAME.match(name):
                raise DeployError(
                    400,
                    "`model_name` must be 1-100 letters, digits, `.`, `_` or `-`.",
                    "invalid_parameter",
                    "model_name",
                )
            if config.kind == "llm":  # an adapter runs on its base's replicas: no GPUs
                self._check_pool(config)
                self.check_quota(s, account, config.num_gpus * settings.max_instances, None)
            full_name = f"{owner}/{name}"
            deployment = s.scalar(select(Deployment).where(Deployment.full_name == full_name))
            if deployment is None:
                deployment = Deployment(
                    id="dep_" + secrets.token_hex(8),
                    account_id=account.id,
                    full_name=full_name,
                    kind=config.kind,
                )
                s.add(deployment)
                s.flush()
                version = 1
            else:
                if deployment.kind != config.kind:
                    raise DeployError(
                        409,
                        f"`{full_name}` is a {deployment.kind} deployment; pick another name.",
                        "name_taken",
                        "model_name",
                    )
                latest = s.scalar(
                    select(func.max(DeploymentVersion.version)).where(
                        DeploymentVersion.deployment_id == deployment.id
                    )
                )
                version = (latest or 0) + 1
            now = datetime.now(UTC)
            row = DeploymentVersion(
                deploy_id=secrets.token_hex(10),
                deployment_id=deployment.id,
                version=version,
                config=config.model_dump_json(),
                settings=settings.model_dump_json(),
                secret=self.vault.encrypt(token) if token else None,
                desired="running",
                status="initializing",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            return _record(row, deployment)

    def update_settings(
        self, account_id: str, deploy_id: str, settings: ScaleSettings
    ) -> VersionRecord:
        with self.db.session() as s, s.begin():
            account = self.lock_account(s, account_id)
            row, deployment = self._own(s, account_id, deploy_id, changing=True)
            config = VersionConfig.model_validate_json(row.config)
            if config.kind != "llm":
                raise DeployError(
                    400,
                    "A LoRA adapter runs on its base model's instances; it has no settings.",
                    "invalid_parameter",
                    "settings",
                )
            self.check_quota(s, account, config.num_gpus * settings.max_instances, deploy_id)
            row.settings = settings.model_dump_json()
            row.updated_at = datetime.now(UTC)
            return _record(row, deployment)

    def set_desired(self, account_id: str, deploy_id: str, desired: Desired) -> VersionRecord:
        """Stop, start or delete. Starting a stopped or failed version retries it from the
        start (its weights are cached); starting counts against the quota again. A delete is
        final from its answer on: a version being deleted cannot be started or stopped (404),
        only deleted again."""
        with self.db.session() as s, s.begin():
            account = self.lock_account(s, account_id)
            row, deployment = self._own(s, account_id, deploy_id, changing=desired != "deleted")
            config = VersionConfig.model_validate_json(row.config)
            if desired == "running" and row.desired != "running" and config.kind == "llm":
                settings = ScaleSettings.model_validate_json(row.settings)
                self.check_quota(s, account, config.num_gpus * settings.max_instances, deploy_id)
            if desired == "running" and row.status in ("stopped", "failed"):
                row.status, row.fail_reason = "initializing", None
            row.desired = desired
            row.updated_at = datetime.now(UTC)
            return _record(row, deployment)

    # -- reads --------------------------------------------------------------------------------

    def get(self, account_id: str, deploy_id: str) -> VersionRecord:
        with self.db.session() as s:
            row, deployment = self._own(s, account_id, deploy_id)
            return _record(row, deployment)

    def list(self, account_id: str, status: str | None = None) -> list[VersionRecord]:
        """The account's versions, newest first; deleted ones only when asked for."""
        with self.db.session() as s:
            query = (
                select(DeploymentVersion, Deployment)
                .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
                .where(Deployment.account_id == account_id)
                .order_by(DeploymentVersion.created_at.desc())
            )
            if status is not None:
                query = query.where(DeploymentVersion.status == status)
            else:
                query = query.where(DeploymentVersion.status != "deleted")
            return [_record(row, dep) for row, dep in s.execute(query)]

    def by_name(self, account_id: str, full_name: str) -> list[VersionRecord]:
        """The live versions of one of the account's deployments, by its full name."""
        with self.db.session() as s:
            query = (
                select(DeploymentVersion, Deployment)
                .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
                .where(Deployment.account_id == account_id, Deployment.full_name == full_name)
                .where(DeploymentVersion.status != "deleted")
            )
            return [_record(row, dep) for row, dep in s.execute(query)]

    def owner_of(self, account_id: str) -> str:
        """The owner prefix of the account's models (its name), checked as for a create."""
        with self.db.session() as s:
            account = s.get(Account, account_id)
            if account is None:
                raise DeployError(404, "No such account.", "not_found")
            return self._owner(account)

    def live(self) -> list[VersionRecord]:
        """Every version accounts deployed not yet deleted, for the reconciler (all accounts;
        built-in models are control/builtins.py's)."""
        with self.db.session() as s:
            query = (
                select(DeploymentVersion, Deployment)
                .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
                .where(DeploymentVersion.status != "deleted")
                .where(Deployment.kind.in_(("llm", "lora")))
            )
            return [_record(row, dep) for row, dep in s.execute(query)]

    def spending_limits(self, account_ids: set[str]) -> dict[str, float]:
        """The spending limits of those accounts that have one."""
        if not account_ids:
            return {}
        with self.db.session() as s:
            rows = s.execute(
                select(Account.id, Account.spending_limit).where(
                    Account.id.in_(account_ids), Account.spending_limit.is_not(None)
                )
            )
            return {account_id: float(limit) for account_id, limit in rows}

    def token(self, deploy_id: str) -> str | None:
        """The version's Hub token, decrypted for a download; never rendered."""
        with self.db.session() as s:
            secret = s.scalar(
                select(DeploymentVersion.secret).where(DeploymentVersion.deploy_id == deploy_id)
            )
        return self.vault.decrypt(secret) if secret else None

    # -- writes from the reconciler -------------------------------------------------------------

    def set_status(
        self,
        deploy_id: str,
        status: Status,
        reason: str | None = None,
        *,
        only_from: tuple[str, ...] | None = None,
    ) -> bool:
        """Compare-and-set: with `only_from`, a version whose status moved on meanwhile (a
        user stopped it) is left alone. True when the row changed."""
        query = update(DeploymentVersion).where(DeploymentVersion.deploy_id == deploy_id)
        if only_from is not None:
            query = query.where(DeploymentVersion.status.in_(only_from))
        query = query.where(
            (DeploymentVersion.status != status)
            | (func.coalesce(DeploymentVersion.fail_reason, "") != (reason or ""))
        )
        with self.db.session() as s, s.begin():
            result = s.execute(
                query.values(status=status, fail_reason=reason, updated_at=datetime.now(UTC))
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def set_commit(self, deploy_id: str, commit: str) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(DeploymentVersion, deploy_id)
            if row is None:
                return
            config = VersionConfig.model_validate_json(row.config)
            if config.commit is None:
                row.config = config.model_copy(update={"commit": commit}).model_dump_json()
                row.updated_at = datetime.now(UTC)

    def hold_lease(self, holder: str, ttl_s: float, name: str = "reconciler") -> bool:
        """Take or renew the lease `name` for `holder` until now + ttl_s; False while another
        holder's lease runs. Gateways sharing a database thereby elect one status writer."""
        now = datetime.now(UTC)
        until = now + timedelta(seconds=ttl_s)
        with self.db.session() as s, s.begin():
            renewed = s.execute(
                update(ControlLease)
                .where(ControlLease.name == name)
                .where((ControlLease.holder == holder) | (ControlLease.expires_at < now))
                .values(holder=holder, expires_at=until)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                return True
        try:
            with self.db.session() as s, s.begin():
                s.add(ControlLease(name=name, holder=holder, expires_at=until))
            return True
        except IntegrityError:  # held by another (or just taken by one)
            return False

    # -- checks -------------------------------------------------------------------------------

    def lock_account(self, s: Session, account_id: str) -> Account:
        # A no-op write takes the row lock (PostgreSQL) or the write lock (SQLite) before the
        # quota is read, so concurrent creates are serialised per account.
        s.execute(
            update(Account).where(Account.id == account_id).values(gpu_quota=Account.gpu_quota)
        )
        account = s.get(Account, account_id)
        if account is None:
            raise DeployError(404, "No such account.", "not_found")
        return account

    def _owner(self, account: Account) -> str:
        if not _OWNER.match(account.name):
            raise DeployError(
                400,
                f"The account name `{account.name}` cannot own models (letters, digits, "
                "`.`, `_`, `-`).",
                "invalid_owner",
            )
        if account.name.lower() in self.reserved:
            raise DeployError(
                403,
                f"`{account.name}` is a reserved owner of built-in models.",
                "reserved_owner",
            )
        return account.name

    def _check_pool(self, config: VersionConfig) -> None:
        try:
            pool = self.pools.get(config.gpu)
        except UnknownPool as exc:
            raise DeployError(400, str(exc), "unknown_gpu", "gpu") from None
        if config.num_gpus > pool.count:
            raise DeployError(
                400,
                f"`{pool.name}` has {pool.count} GPUs in all; num_gpus={config.num_gpus}"
                " cannot fit.",
                "invalid_parameter",
                "num_gpus",
            )

    def check_quota(self, s: Session, account: Account, wanted: int, replacing: str | None) -> None:
        quota = account.gpu_quota if account.gpu_quota is not None else self.default_quota
        used = 0
        rows = s.execute(
            select(
                DeploymentVersion.deploy_id, DeploymentVersion.config, DeploymentVersion.settings
            )
            .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
            .where(Deployment.account_id == account.id)
            .where(DeploymentVersion.desired == "running")
        )
        for deploy_id, config, settings in rows:
            if deploy_id == replacing:
                continue
            used += (
                VersionConfig.model_validate_json(config).num_gpus
                * ScaleSettings.model_validate_json(settings).max_instances
            )
        # GPU containers count against the same quota (their N in NxTYPE).
        used += s.scalar(
            select(func.coalesce(func.sum(Container.num_gpus), 0))
            .where(Container.account_id == account.id)
            .where(Container.state.in_(ACTIVE_STATES))
        )
        if used + wanted > quota:
            raise DeployError(
                403,
                f"GPU quota exceeded: {used} of {quota} GPUs are in use by this account's "
                f"deployments and containers and this asks for {wanted} more.",
                "gpu_quota_exceeded",
            )

    def _own(
        self, s: Session, account_id: str, deploy_id: str, changing: bool = False
    ) -> tuple[DeploymentVersion, Deployment]:
        """The account's version; `changing`: also not one being deleted (its DELETE was
        answered; the reconciler still stops its instances), which a start would bring back."""
        found = s.execute(
            select(DeploymentVersion, Deployment)
            .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
            .where(DeploymentVersion.deploy_id == deploy_id)
        ).first()
        gone = found is None or found[1].account_id != account_id or found[0].status == "deleted"
        if gone or (changing and found[0].desired == "deleted"):
            raise DeployError(404, f"No deployment `{deploy_id}`.", "not_found", "deploy_id")
        return found[0], found[1]


def _record(row: DeploymentVersion, deployment: Deployment) -> VersionRecord:
    return VersionRecord(
        deploy_id=row.deploy_id,
        deployment_id=deployment.id,
        account_id=deployment.account_id,
        full_name=deployment.full_name,
        version=row.version,
        config=VersionConfig.model_validate_json(row.config),
        settings=ScaleSettings.model_validate_json(row.settings),
        desired=row.desired,  # type: ignore[arg-type]
        status=row.status,  # type: ignore[arg-type]
        fail_reason=row.fail_reason,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        has_secret=row.secret is not None,
    )
