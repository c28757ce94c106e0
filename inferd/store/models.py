"""Tables. No prompt, output or embedding ever lands here: keys (encrypted), accounts and
usage metadata only. Schema changes go through Alembic (store/migrations)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timestamp read back from the database, offset-aware: SQLite returns them naive (they
    are UTC, always); PostgreSQL returns them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The operator's own account: it owns the built-in models' rows (control/builtins.py), holds no
# keys and is listed nowhere. Its name cannot be an owner prefix, so no deployment can claim it.
SYSTEM_ACCOUNT_ID = "acct_builtin"
SYSTEM_ACCOUNT_NAME = "inferd:builtin"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spending_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    # GPUs its deployments may hold (sum of max_instances x num_gpus); None: the server default.
    gpu_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where the operator's notices go (a model's deprecation); None: none are sent.
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # Its requests never go to an external provider not marked zero-retention (routes).
    zero_retention: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("account_id", "name"),
        Index("ux_api_keys_account_alias", "account_id", "alias", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # Keyed hash for lookup; the key itself encrypted under the master key, because scoped
    # JWTs are signed with it and the server must verify them.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_encrypted: Mapped[str] = mapped_column(String(400))
    prefix: Mapped[str] = mapped_column(String(16))
    # A second name the key answers to: `auto` on the first key of accounts made before keys
    # were first named `auto` (migration 0002). Never equal to another key's name.
    alias: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The user who created the key: it acts with their role in the team (store/team_tables.py).
    # None: the team's bootstrap key, which acts as an admin.
    user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Usage(Base):
    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    key_name: Mapped[str] = mapped_column(String(200))
    jwt_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(300))
    route: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    # A routed request: the target that served it (`model` is the route's name).
    served_by: Mapped[str | None] = mapped_column(String(400), nullable=True)


class Deployment(Base):
    """A model an account deployed: a stable full name (`owner/model_name`) over versions."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    full_name: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # llm | lora | builtin
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeploymentVersion(Base):
    """One immutable configuration of a deployment, addressed by `deploy_id` and by
    `full_name:version`. Only `settings`, `desired` and the status columns ever change."""

    __tablename__ = "deployment_versions"
    __table_args__ = (UniqueConstraint("deployment_id", "version"),)

    deploy_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # The spec, as JSON: weights repo and revision (the commit once resolved), engine, gpu,
    # num_gpus, max_batch_size, and for a LoRA its base model.
    # A built-in model's version holds its catalog declaration instead.
    config: Mapped[str] = mapped_column(Text)
    settings: Mapped[str] = mapped_column(String(1000))  # min/max instances, scaling windows
    # The Hub token, encrypted under the master key; never rendered, never logged.
    secret: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    desired: Mapped[str] = mapped_column(String(16), default="running")  # running|stopped|deleted
    status: Mapped[str] = mapped_column(String(16), default="initializing")
    fail_reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class DeprecationNotice(Base):
    """One deprecation email to one account, written before it is sent: the unique pair makes
    every gateway, and every restart, send it at most once."""

    __tablename__ = "deprecation_notices"
    __table_args__ = (UniqueConstraint("model", "account_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ControlLease(Base):
    """Who writes deployment status: one gateway at a time holds the lease and renews it every
    reconciler tick; another takes it over once it has expired (its holder stopped)."""

    __tablename__ = "control_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
