"""The durable job queue's one table (inferd/jobs uses it).

A job row holds metadata only: ids, kind, attempt counts and times. What a job works on (a batch
line, a webhook payload) lives elsewhere, encrypted, and the job names it by id (`ref`, `key`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow

# The states a job moves through: queued → running → done | failed (or back to queued for a
# retry; a running job whose lease expired is claimable again). cancelled: withdrawn while queued.
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED_STATES = (DONE, FAILED, CANCELLED)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # claim(): state and kind by equality, then the queue's order.
        Index("ix_jobs_claim", "state", "kind", "priority", "run_at"),
        Index("ix_jobs_ref", "ref", "kind"),
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    # Idempotency key (`webhook:{request_id}`, `batch:{batch_id}:{custom_id}`): enqueueing the
    # same work twice finds the row already there.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The id of the object the job works on (a batch, a request); counts and cancel go by it.
    ref: Mapped[str] = mapped_column(String(255))
    # Lower runs first: work a user waits on before bulk work.
    priority: Mapped[int] = mapped_column(Integer, default=100)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    # Claims so far, the current one included (a reclaim after a crash counts too).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Not claimable before this time (a retry's schedule).
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Who runs it and until when; past lease_until, another process may claim it.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A short reason (an exception type, an HTTP status), never content.
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
