"""Routes (control/routes.py): a public or account-owned model name served by ordered,
weighted targets, models here or external OpenAI-compatible providers.

`targets` is a JSON list; a provider's API key is kept in it encrypted with the key vault
(`api_key_encrypted`) and is never returned by the API or logged.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow


class RouteRow(Base):
    __tablename__ = "routes"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    # Visible to every account (an operator's route); else only to its own account.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    task: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(16))
    zero_retention: Mapped[bool] = mapped_column(Boolean, default=False)
    # A deprecation: from this moment the name (a built-in model) is served by the target.
    deprecated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    targets: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
