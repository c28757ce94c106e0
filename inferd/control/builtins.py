"""Built-in models in the registry: a catalog file seeds them, the database serves them.

At start (and with `inferd models seed`) a catalog file's models are written into the same
deployments tables accounts deploy into, owned by the operator's system account:

  - a model not there yet becomes a deployment with version 1;
  - a model whose declaration changed gets a new version, and the old one is marked deleted;
  - a built-in the file no longer declares is marked deleted.

Seeding the same file again writes nothing. Gateways build their catalog from these rows, and
the reconciler reads them again every tick, so a change seeded by any process reaches every
gateway sharing the database without a restart. A gateway started with `seed_catalog = false`
serves what the database holds and never writes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from inferd.catalog import Catalog, ModelSpec
from inferd.store.db import Database
from inferd.store.models import (
    SYSTEM_ACCOUNT_ID,
    SYSTEM_ACCOUNT_NAME,
    Account,
    Deployment,
    DeploymentVersion,
)

KIND = "builtin"
SEED_LOCK = 0x1F3D_0002  # a PostgreSQL advisory lock key: gateways starting together seed in turn
# What restarts a built-in's replicas when it changes; anything else (price, tags, description,
# deprecation) is only a new catalog entry.
RUNTIME_FIELDS = {"task", "engine", "backend", "weights", "context_length", "replicas", "options"}


def declaration(spec: ModelSpec) -> str:
    """A built-in's stored form: its spec as declared, in a stable JSON form."""
    return spec.model_dump_json(exclude_defaults=True)


def seed(db: Database, specs: Iterable[ModelSpec]) -> bool:
    """Make the database's built-in models those of `specs`. True when anything changed."""
    wanted = {spec.name: declaration(spec) for spec in specs}
    with db.session() as s, s.begin():
        if s.bind is not None and s.bind.dialect.name == "postgresql":
            s.execute(text(f"SELECT pg_advisory_xact_lock({SEED_LOCK})"))
        _system_account(s)
        changed = False
        now = datetime.now(UTC)
        current = _current(s)
        for name, (_, latest) in current.items():
            if name not in wanted and latest is not None:
                _retire(latest, now)
                changed = True
        for name, config in wanted.items():
            deployment, latest = current.get(name, (None, None))
            if latest is not None and latest.config == config:
                continue
            if deployment is None:
                deployment = Deployment(
                    id="dep_" + secrets.token_hex(8),
                    account_id=SYSTEM_ACCOUNT_ID,
                    full_name=name,
                    kind=KIND,
                )
                s.add(deployment)
                s.flush()
            if latest is not None:
                _retire(latest, now)
            last = s.scalar(
                select(DeploymentVersion.version)
                .where(DeploymentVersion.deployment_id == deployment.id)
                .order_by(DeploymentVersion.version.desc())
                .limit(1)
            )
            s.add(
                DeploymentVersion(
                    deploy_id=secrets.token_hex(10),
                    deployment_id=deployment.id,
                    version=(last or 0) + 1,
                    config=config,
                    settings="{}",
                    desired="running",
                    status="running",
                    created_at=now,
                    updated_at=now,
                )
            )
            changed = True
        return changed


def load(db: Database) -> list[ModelSpec]:
    """The built-in models as the database holds them now, in the order they were seeded."""
    with db.session() as s:
        rows = s.execute(
            select(DeploymentVersion.config)
            .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
            .where(Deployment.kind == KIND, DeploymentVersion.desired != "deleted")
            .order_by(Deployment.created_at, Deployment.full_name)
        )
        return [ModelSpec.model_validate_json(config) for (config,) in rows]


def catalog_from(db: Database, seed_from: Catalog | None) -> Catalog:
    """Seed (when given a catalog) and build the catalog this gateway serves from the
    database. The seed is validated as a catalog before anything is written."""
    if seed_from is None:
        return Catalog(load(db))
    seed(db, seed_from)
    return Catalog(load(db), clock=seed_from.clock)


def restarts(old: ModelSpec, new: ModelSpec) -> bool:
    """Whether a changed declaration needs the model's replicas started afresh."""
    return old.model_dump(include=RUNTIME_FIELDS) != new.model_dump(include=RUNTIME_FIELDS)


def _current(s: Session) -> dict[str, tuple[Deployment, DeploymentVersion | None]]:
    """Each built-in deployment with its live version (None once retired)."""
    found: dict[str, tuple[Deployment, DeploymentVersion | None]] = {}
    for deployment in s.scalars(select(Deployment).where(Deployment.kind == KIND)):
        found[deployment.full_name] = (deployment, None)
    rows = s.execute(
        select(DeploymentVersion, Deployment.full_name)
        .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
        .where(Deployment.kind == KIND, DeploymentVersion.desired != "deleted")
    )
    for version, name in rows:
        found[name] = (found[name][0], version)
    return found


def _retire(version: DeploymentVersion, now: datetime) -> None:
    version.desired = version.status = "deleted"
    version.updated_at = now


def _system_account(s: Session) -> None:
    if s.get(Account, SYSTEM_ACCOUNT_ID) is None:
        s.add(Account(id=SYSTEM_ACCOUNT_ID, name=SYSTEM_ACCOUNT_NAME))
        s.flush()
