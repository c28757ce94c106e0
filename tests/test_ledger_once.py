"""A job that runs again after a crash records its request once: the ledger keeps one row per
request id for rows marked `once`, within a flush and across flushes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from inferd.billing.ledger import UsageLedger, UsageRecord
from inferd.store.db import Database
from inferd.store.models import Usage


def row(request_id: str, cost: float = 0.5) -> UsageRecord:
    return UsageRecord(
        request_id,
        "acct",
        "auto",
        None,
        "m",
        "native_text_generation",
        200,
        3,
        4,
        cost,
        datetime.now(UTC),
        12,
    )


def test_once_rows_are_written_once(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    db.migrate()
    ledger = UsageLedger(db)

    async def run() -> None:
        ledger.record(row("job-1"), once=True)
        ledger.record(row("job-1"), once=True)  # the rerun, before the first flush
        ledger.record(row("plain"))
        ledger.record(row("plain"))  # ordinary rows are never deduplicated
        assert await ledger.flush()
        ledger.record(row("job-1"), once=True)  # a rerun after the first run was written
        ledger.record(row("job-2"), once=True)
        assert await ledger.flush()

    asyncio.run(run())
    with db.session() as s:
        counts = dict(
            s.execute(select(Usage.request_id, func.count()).group_by(Usage.request_id)).all()
        )
    assert counts == {"job-1": 1, "plain": 2, "job-2": 1}
    assert ledger.total("acct:acct") == 4 * 0.5
    db.close()
