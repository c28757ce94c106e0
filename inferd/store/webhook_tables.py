"""Webhooks: each account's signing secret, and one row per webhook request with its delivery.

No content here: the request and its result are blobs in the encrypted store (store/blobs.py),
named by the row's id and readable only with the wrapped keys kept here; the receiver's URL is
encrypted under the master key (URLs can carry tokens, and they stay out of logs too).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow


class WebhookSecret(Base):
    __tablename__ = "webhook_secrets"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(500))  # whsec_..., encrypted
    # The secret before the last rotation: deliveries carry its signature too until then.
    previous: Mapped[str | None] = mapped_column(String(500), nullable=True)
    previous_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rotated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One native request answered by webhook.

    state: queued (the inference waits for its turn) → pending (the result waits for
    delivery) → delivered | failed (retries exhausted, or 410). The blobs are purged when the
    resend window ends (`purge_at`), after which a resend answers 410.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_account", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the `webhook-id` header
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(4000))  # encrypted
    request_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    result_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    purge_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
