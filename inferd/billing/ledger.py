"""The usage ledger: one row per request (metadata only), written off the request path.

`record` appends to memory and returns. A background task writes batches every
`flush_interval_s`; a slow or failing database delays the writes, never a request. Rows that
fail to write are kept and retried (up to `max_buffer`, beyond which the oldest are dropped and
counted); `close` flushes what is left, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from inferd.store.db import Database
from inferd.store.models import Usage

log = logging.getLogger("inferd.ledger")

UPTIME_ROUTE = "deployment_uptime"  # rows billing a deployed version's instance uptime
CONTAINER_ROUTE = "container_uptime"  # rows billing a GPU container's running seconds


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    account_id: str
    key_name: str
    jwt_id: str | None
    model: str
    route: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    started_at: datetime
    duration_ms: int


FIELDS = tuple(UsageRecord.__dataclass_fields__)
STARTED_AT = FIELDS.index("started_at")


class UsageLedger:
    def __init__(
        self, db: Database, flush_interval_s: float = 0.5, max_buffer: int = 200_000
    ) -> None:
        self.db = db
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self._buffer: list[UsageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._once: dict[str, UsageRecord] = {}  # request id → row, written at most once
        self.dropped = 0

    def record(self, row: UsageRecord, *, once: bool = False) -> None:
        """`once`: the row's request id is its idempotency key (a job that may run again after
        a crash records the same id): written only if no row of that id exists."""
        if once:
            self._once[row.request_id] = row
            return
        self._buffer.append(row)
        if len(self._buffer) > self.max_buffer:
            overflow = len(self._buffer) - self.max_buffer
            del self._buffer[:overflow]
            self.dropped += overflow

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _ in range(5):
            if await self.flush():
                return
            await asyncio.sleep(0.5)
        log.error("usage rows not written at shutdown", extra={"error": str(len(self._buffer))})

    async def flush(self) -> bool:
        async with self._lock:
            rows, self._buffer = self._buffer, []
            once, self._once = self._once, {}
            if not rows and not once:
                return True
            try:
                await asyncio.to_thread(self._write, rows, once)
            except Exception as exc:
                self._buffer[:0] = rows  # keep order; retried next round
                self._once = {**once, **self._once}
                log.warning("usage write failed; will retry", extra={"error": type(exc).__name__})
                return False
            return True

    def _write(self, rows: list[UsageRecord], once: dict[str, UsageRecord]) -> None:
        if once:
            # A job's rerun after a crash finds its first run's row: one row per request id.
            # Reruns never overlap (the job queue's lease), so a read is enough here.
            with self.db.session() as s:
                known = set(
                    s.scalars(select(Usage.request_id).where(Usage.request_id.in_(list(once))))
                )
            rows = [*rows, *(row for key, row in once.items() if key not in known)]
        if not rows:
            return
        # One driver-level executemany of plain tuples: SQLAlchemy's per-row bind processing
        # (and dataclasses.asdict) cost more CPU than the gateway spends on the requests.
        sqlite = self.db.engine.dialect.name == "sqlite"
        params = []
        for r in rows:
            values = [getattr(r, f) for f in FIELDS]
            if sqlite:  # the text form SQLAlchemy's SQLite DateTime reads back
                values[STARTED_AT] = r.started_at.replace(tzinfo=None).isoformat(
                    " ", "microseconds"
                )
            params.append(tuple(values))
        with self.db.engine.begin() as conn:
            conn.exec_driver_sql(self._insert_sql(conn), params)

    def _insert_sql(self, conn) -> str:
        style = conn.dialect.paramstyle
        marks = ", ".join("?" if style == "qmark" else "%s" for _ in FIELDS)
        return f"INSERT INTO usage ({', '.join(FIELDS)}) VALUES ({marks})"

    async def _run(self) -> None:
        delay = self.flush_interval_s
        while True:
            await asyncio.sleep(delay)
            ok = await self.flush()
            delay = self.flush_interval_s if ok else min(delay * 2, 10.0)

    # -- reads ------------------------------------------------------------------------------

    def total(self, scope_key: str) -> float:
        """Settled spending of a budget scope ("acct:<id>" or "jwt:<id>")."""
        kind, _, ident = scope_key.partition(":")
        column = Usage.account_id if kind == "acct" else Usage.jwt_id
        with self.db.session() as s:
            return float(
                s.scalar(select(func.coalesce(func.sum(Usage.cost), 0.0)).where(column == ident))
                or 0.0
            )

    def summary(
        self,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        model: str | None,
        key_name: str | None,
    ) -> list[dict[str, Any]]:
        query = select(Usage).where(Usage.account_id == account_id)
        if start:
            query = query.where(Usage.started_at >= start)
        if end:
            query = query.where(Usage.started_at < end)
        if model:
            query = query.where(Usage.model == model)
        if key_name:
            query = query.where(Usage.key_name == key_name)
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        with self.db.session() as s:
            # Grouping in Python keeps one code path for SQLite and PostgreSQL date handling.
            for row in s.execute(
                query.with_only_columns(
                    Usage.started_at,
                    Usage.model,
                    Usage.prompt_tokens,
                    Usage.completion_tokens,
                    Usage.cost,
                    Usage.status,
                    Usage.route,
                    Usage.duration_ms,
                )
            ):
                day = row.started_at.date().isoformat()
                g = groups.setdefault(
                    (day, row.model),
                    {
                        "date": day,
                        "model": row.model,
                        "requests": 0,
                        "errors": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "cost": 0.0,
                        "uptime_seconds": 0.0,
                    },
                )
                g["cost"] += row.cost
                if row.route in (UPTIME_ROUTE, CONTAINER_ROUTE):  # billed by the second
                    g["uptime_seconds"] += row.duration_ms / 1000
                    continue
                g["requests"] += 1
                g["errors"] += int(row.status >= 400)
                g["prompt_tokens"] += row.prompt_tokens
                g["completion_tokens"] += row.completion_tokens
        return [groups[k] for k in sorted(groups)]


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """A date (YYYY-MM-DD), an ISO timestamp or unix seconds; `end` dates are inclusive."""
    if not value:
        return None
    from datetime import UTC

    if value.replace(".", "", 1).isdigit():
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError):  # beyond the years datetime holds
            raise ValueError("timestamp out of range") from None
    if len(value) == 10:
        day = date.fromisoformat(value)
        moment = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        return moment
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
