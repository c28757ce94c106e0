"""GPU containers (control/containers.py): what each account asked for and what was observed.

`node` is the gateway whose podman runs the container: only that gateway's container manager
drives it. The cloud-init user data (it may carry keys) is kept encrypted with the key vault
until the container answers SSH, then erased; it never reaches a log line.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow

# The page's states, in lifecycle order; the first four are `active`.
ACTIVE_STATES = ("creating", "starting", "running", "shutting_down")
INACTIVE_STATES = ("failed", "deleted")


class Container(Base):
    __tablename__ = "containers"
    __table_args__ = (
        Index("ix_containers_account", "account_id", "created_at"),
        Index("ix_containers_node_state", "node", "state"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16))
    gpu_config: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    num_gpus: Mapped[int] = mapped_column(Integer)
    price_per_hour: Mapped[float] = mapped_column(Float)
    container_image: Mapped[str] = mapped_column(String(200))  # the name the user chose
    node: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fail_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)  # vault-encrypted
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    start_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    state_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stop_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
