"""The usage ledger: one row per request (metadata only), written off the request path.

`record` appends to memory and returns. A background task writes batches every
`flush_interval_s`; a slow or failing database delays the writes, never a request. Rows that
fail to write are kept and retried (up to `max_buffer`, beyond which the oldest are dropped and
counted); `close` flushes what is left, so a graceful shutdown loses nothing.

Each write also adds its rows to the daily rollups (`usage_daily`) in the same transaction, so
`summary` over whole days and account totals read the rollups, never every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from inferd.store.db import Database
from inferd.store.models import Usage
from inferd.store.usage_tables import SUMS, UsageDaily

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
    served_by: str | None = None  # a routed request's target (`model` is the route)


FIELDS = tuple(UsageRecord.__dataclass_fields__)
STARTED_AT = FIELDS.index("started_at")
UPTIME_ROUTES = frozenset((UPTIME_ROUTE, CONTAINER_ROUTE))


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
                values[STARTED_AT] = (
                    _utc(r.started_at).replace(tzinfo=None).isoformat(" ", "microseconds")
                )
            params.append(tuple(values))
        with self.db.engine.begin() as conn:
            conn.exec_driver_sql(self._insert_sql(conn), params)
            # `rows` is exactly what was inserted (once-rows already known were left out), and
            # one transaction holds both: a failed write leaves neither, and its retry adds once.
            conn.execute(self._upsert(conn), rollup(rows))

    def _insert_sql(self, conn: Connection) -> str:
        style = conn.dialect.paramstyle
        marks = ", ".join("?" if style == "qmark" else "%s" for _ in FIELDS)
        return f"INSERT INTO usage ({', '.join(FIELDS)}) VALUES ({marks})"

    def _upsert(self, conn: Connection) -> Any:
        insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
        stmt = insert(UsageDaily)
        table = UsageDaily.__table__.c
        return stmt.on_conflict_do_update(
            index_elements=[table.account_id, table.day, table.model, table.key_name],
            set_={name: table[name] + stmt.excluded[name] for name in SUMS},
        )

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
        if kind == "acct":  # the rollups hold the cost of every row an account wrote
            query = select(func.sum(UsageDaily.cost)).where(UsageDaily.account_id == ident)
        else:  # JWTs have no rollups
            query = select(func.sum(Usage.cost)).where(Usage.jwt_id == ident)
        with self.db.session() as s:
            return float(s.scalar(query) or 0.0)

    def summary(
        self,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        model: str | None,
        key_name: str | None,
    ) -> list[dict[str, Any]]:
        """Usage by (UTC day, model) from `start` (inclusive) to `end` (exclusive): from the
        rollups when both bounds are absent or whole UTC days, else from the raw rows."""
        start, end = _utc_or_none(start), _utc_or_none(end)
        if all(b is None or b.time() == time() for b in (start, end)):
            return self.daily_summary(
                account_id,
                start.date() if start else None,
                end.date() if end else None,
                model,
                key_name,
            )
        return self.raw_summary(account_id, start, end, model, key_name)

    def daily_summary(
        self,
        account_id: str,
        first: date | None,
        stop: date | None,
        model: str | None,
        key_name: str | None,
    ) -> list[dict[str, Any]]:
        """`summary` from the rollups, days `first` ≤ day < `stop`."""
        d = UsageDaily
        query = select(
            d.day,
            d.model,
            *(func.sum(getattr(d, name)).label(name) for name in SUMS),
        ).where(d.account_id == account_id)
        if first:
            query = query.where(d.day >= first)
        if stop:
            query = query.where(d.day < stop)
        if model:
            query = query.where(d.model == model)
        if key_name:
            query = query.where(d.key_name == key_name)
        with self.db.session() as s:
            rows = s.execute(query.group_by(d.day, d.model)).all()
        # Sorted here, not by ORDER BY: the database's collation may order model names unlike
        # Python, and the raw path sorts in Python. PostgreSQL's SUM of bigint is a Decimal.
        out = [
            {
                "date": r.day.isoformat(),
                "model": r.model,
                "requests": int(r.requests),
                "errors": int(r.errors),
                "prompt_tokens": int(r.prompt_tokens),
                "completion_tokens": int(r.completion_tokens),
                "cost": float(r.cost),
                "uptime_seconds": float(r.uptime_seconds),
            }
            for r in rows
        ]
        out.sort(key=lambda g: (g["date"], g["model"]))
        return out

    def raw_summary(
        self,
        account_id: str,
        start: datetime | None,
        end: datetime | None,
        model: str | None,
        key_name: str | None,
    ) -> list[dict[str, Any]]:
        """`summary` from every raw row in the bounds (UTC; sub-day bounds need this)."""
        start, end = _utc_or_none(start), _utc_or_none(end)
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
                day = _utc(row.started_at).date().isoformat()
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
                if row.route in UPTIME_ROUTES:  # billed by the second
                    g["uptime_seconds"] += row.duration_ms / 1000
                    continue
                g["requests"] += 1
                g["errors"] += int(row.status >= 400)
                g["prompt_tokens"] += row.prompt_tokens
                g["completion_tokens"] += row.completion_tokens
        return [groups[k] for k in sorted(groups)]


def rollup(rows: list[UsageRecord]) -> list[dict[str, Any]]:
    """`rows` summed by (account, UTC day, model, key): the rollups' increments."""
    sums: dict[tuple[str, date, str, str], list[Any]] = {}
    for r in rows:
        key = (r.account_id, _utc(r.started_at).date(), r.model, r.key_name)
        s = sums.get(key)
        if s is None:
            s = sums[key] = [0, 0, 0, 0, 0.0, 0]
        s[4] += r.cost
        if r.route in UPTIME_ROUTES:
            s[5] += r.duration_ms
            continue
        s[0] += 1
        s[1] += r.status >= 400
        s[2] += r.prompt_tokens
        s[3] += r.completion_tokens
    # In key order: concurrent writers lock the rollup rows they share in the same order, so
    # two gateways' flushes wait for each other instead of deadlocking.
    return [
        {
            "account_id": key[0],
            "day": key[1],
            "model": key[2],
            "key_name": key[3],
            **dict(zip(SUMS, (*s[:5], s[5] / 1000), strict=True)),
        }
        for key, s in sorted(sums.items())
    ]


def _utc(at: datetime) -> datetime:
    """In UTC; naive values are UTC already (SQLite reads them back so)."""
    return at if at.tzinfo is None else at.astimezone(UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """A date (YYYY-MM-DD), an ISO timestamp or unix seconds; `end` dates are inclusive."""
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError):  # beyond the years datetime holds
            raise ValueError("timestamp out of range") from None
    if len(value) == 10:
        day = date.fromisoformat(value)
        try:
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        except OverflowError:  # the day after 9999-12-31
            raise ValueError("date out of range") from None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
