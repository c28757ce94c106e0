"""Pre-aggregated usage: one row per (account, UTC day, model, API key), kept by the ledger in
the transaction that writes the raw `usage` rows, so a dashboard's usage page and budget
baselines read thousands of rollup rows instead of scanning millions of ledger rows.

Uptime rows (routes `deployment_uptime`, `container_uptime`) add to `cost` and
`uptime_seconds` only; every other row is a request and adds to the rest.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base


class UsageDaily(Base):
    __tablename__ = "usage_daily"

    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # UTC date of started_at
    model: Mapped[str] = mapped_column(String(300), primary_key=True)
    key_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    uptime_seconds: Mapped[float] = mapped_column(Float, default=0.0)


# The columns the ledger adds to on conflict, in this order.
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "uptime_seconds")
