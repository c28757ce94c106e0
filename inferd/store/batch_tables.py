"""Files and batches of the OpenAI-compatible Files and Batch APIs (metadata, and sealed lines).

The content is a blob in the encrypted store (store/blobs.py) named by the row's id; the row
holds its wrapped data key, so destroying that key (and the ciphertext) is what a purge is. A
row outlives its content: `purged_at` and `deleted_at` record when and why the content went.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow

# What a file is to a batch (`role`): the requests it runs, or what it wrote.
INPUT = "input"
OUTPUT = "output"
ERROR = "error"
ROLES = (INPUT, OUTPUT, ERROR)


class BatchFile(Base):
    """One uploaded (or batch-written) file.

    Live while neither `purged_at` nor `deleted_at` is set. `wrapped_key` is None once the
    content is purged (expired, its batch ended, or deleted). `batch_id`/`role` attach the file
    to a batch: an attached input file is purged when its batch ends rather than at
    `expires_at`.
    """

    __tablename__ = "batch_files"
    __table_args__ = (
        # list(): an account's files in created order, the id breaking ties (the cursor).
        Index("ix_batch_files_account", "account_id", "created_at", "id"),
        Index("ix_batch_files_batch", "batch_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # file-..., the blob's id
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(512))  # the client's name: metadata
    purpose: Mapped[str] = mapped_column(String(32))  # batch | batch_output
    bytes: Mapped[int] = mapped_column(BigInteger)
    wrapped_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)  # ROLES


class Batch(Base):
    """One batch (OpenAI's Batch API). Metadata only: its lines live in `batch_lines`, sealed
    with the batch's own key (`line_key`, wrapped by the master key), and its outputs in files.

    status: validating → in_progress → finalizing → completed; failed (validation); expiring →
    finalizing → expired (its window ended); cancelling → finalizing → cancelled.
    `final_status` remembers which end a `finalizing` batch is heading for.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_account", "account_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    final_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The caller as authenticated at create (ids and limits, no secret): lines run as them.
    principal: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    errors_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    line_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pause_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    output_expires_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BatchLine(Base):
    """One request of a batch: its body until it ran, then its output line, both sealed
    (`RecordSealer`, bound to batch id, line number and kind). Deleted when the batch ends."""

    __tablename__ = "batch_lines"
    __table_args__ = (UniqueConstraint("batch_id", "custom_id"),)

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # the input file's line
    custom_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | done
    request: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # output or error file
