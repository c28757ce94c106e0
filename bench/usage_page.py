"""The dashboard's usage page over 1,000,000 ledger rows: `UsageLedger.summary` of one account,
all time, through the daily rollups ÷ through the raw rows (the path sub-day bounds take),
medians of interleaved rounds; then the same through `GET /v1/usage` (`from=1`, one second past
the epoch, is a sub-day bound and so takes the raw path).

PostgreSQL (a database of its own, dropped at the end) when reachable, else SQLite. The raw rows
go in before migration 0013, whose backfill then builds the rollups. Target: ≤ 1 s per page.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from bench.common import BENCH_KEY, free_port, start_inferd
from inferd.billing.ledger import CONTAINER_ROUTE, FIELDS, UPTIME_ROUTE, UsageLedger
from inferd.store.db import MIGRATIONS, Database, normalise_url

ROWS = 1_000_000
DAYS, MODELS, KEYS = 90, 20, 5
ROUNDS = 5
ACCOUNT = "acct_bench_usage"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
NULL_CATALOG = """
[[models]]
name = "bench/null"
task = "text-generation"
engine = "null"
"""


def open_database() -> tuple[str, Callable[[], None]]:
    """(URL, drop) of a fresh database: PostgreSQL's own, or a SQLite file."""
    name = f"inferd_bench_usage_{secrets.token_hex(3)}"
    admin = create_engine(
        normalise_url(f"{PG_SERVER}/postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 2},
    )

    def run(statement: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(statement))

    try:
        run(f"CREATE DATABASE {name}")
    except Exception as exc:
        admin.dispose()
        print(f"PostgreSQL unreachable ({type(exc).__name__}); SQLite instead")
        folder = Path(tempfile.mkdtemp(prefix="inferd-bench-usage-"))
        return f"sqlite:///{folder / 'usage.db'}", lambda: shutil.rmtree(folder)
    return f"{PG_SERVER}/{name}", lambda: run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(db: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ledger_rows(sqlite: bool) -> Iterator[tuple[Any, ...]]:
    """One account's rows spread evenly over DAYS days: MODELS models, KEYS keys, 2% uptime
    rows (both routes), 1% errors."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=DAYS)
    step = timedelta(days=DAYS) / ROWS
    models = [f"bench/model-{m:02d}" for m in range(MODELS)]
    keys = [f"key-{k}" for k in range(KEYS)]
    for i in range(ROWS):
        at: Any = start + i * step
        if sqlite:  # the text the ledger writes there
            at = at.replace(tzinfo=None).isoformat(" ", "microseconds")
        model = models[i % MODELS]
        if i % 50 == 0:
            route = UPTIME_ROUTE if i % 100 == 0 else CONTAINER_ROUTE
            yield (f"up-{i}", ACCOUNT, "", None, model, route, 200, 0, 0, 0.002, at, 60_000)
            continue
        prompt, completion = 50 + i % 500, 10 + i % 200
        status = 500 if i % 97 == 0 else 200
        cost = (prompt + completion) * 1e-6
        key = keys[(i // MODELS) % KEYS]
        yield (
            f"r-{i}",
            ACCOUNT,
            key,
            None,
            model,
            "chat",
            status,
            prompt,
            completion,
            cost,
            at,
            40,
        )


def fill(db: Database) -> None:
    columns = ", ".join(FIELDS)
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if db.engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY usage ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in ledger_rows(sqlite=False):
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in FIELDS)
            rows = ledger_rows(sqlite=True)
            while chunk := [row for _, row in zip(range(50_000), rows, strict=False)]:
                cursor.executemany(f"INSERT INTO usage ({columns}) VALUES ({marks})", chunk)
        raw.commit()
    finally:
        raw.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def side_by_side(
    title: str, rollup: Callable[[], Any], raw: Callable[[], Any]
) -> tuple[list[Any], list[Any]]:
    """Interleaved rounds of both; prints medians and the ratio."""
    fast: list[float] = []
    slow: list[float] = []
    for _ in range(ROUNDS):
        ms, a = timed(rollup)
        fast.append(ms)
        ms, b = timed(raw)
        slow.append(ms)
    f, s = statistics.median(fast), statistics.median(slow)
    print(f"{title}")
    print(f"  rollups  median {f:9.1f} ms   rounds {', '.join(f'{x:.1f}' for x in fast)}")
    print(f"  raw rows median {s:9.1f} ms   rounds {', '.join(f'{x:.0f}' for x in slow)}")
    print(f"  raw ÷ rollups {s / f:.0f}x   (target: rollups ≤ 1000 ms)")
    return a, b


def agree(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    if [(r["date"], r["model"]) for r in a] != [(r["date"], r["model"]) for r in b]:
        return "NO: different groups"
    worst = max(
        (
            abs(x[k] - y[k]) / max(abs(y[k]), 1e-12)
            for x, y in zip(a, b, strict=True)
            for k in x
            if k not in ("date", "model")
        ),
        default=0.0,
    )
    return f"yes ({len(a)} groups, largest relative difference {worst:.1e})"


def main() -> None:
    url, drop = open_database()
    db = Database(url)
    try:
        migrate(db, "0012")
        seconds, _ = timed(lambda: fill(db))
        print(f"{db.engine.dialect.name}: {ROWS:,} ledger rows in {seconds / 1000:.1f} s")
        seconds, _ = timed(lambda: migrate(db, "head"))
        print(f"migration 0013 (backfill) {seconds / 1000:.1f} s")
        with db.engine.begin() as conn:  # production tables have statistics
            conn.exec_driver_sql("ANALYZE")
        with db.engine.connect() as conn:
            daily = conn.exec_driver_sql("SELECT count(*) FROM usage_daily").scalar()
        print(f"{daily:,} rollup rows ({DAYS} days, {MODELS} models, {KEYS} keys + uptime)")

        ledger = UsageLedger(db)
        a, b = side_by_side(
            f"UsageLedger.summary, one account, all time, {ROUNDS} rounds",
            lambda: ledger.summary(ACCOUNT, None, None, None, None),
            lambda: ledger.raw_summary(ACCOUNT, None, None, None, None),
        )
        print(f"  same result: {agree(a, b)}")

        port = free_port()
        server = start_inferd(NULL_CATALOG, port, {"INFERD_DATABASE_URL": url})
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {BENCH_KEY}"},
                timeout=600,
            ) as client:

                def page(**extra: str) -> list[dict[str, Any]]:
                    r = client.get("/v1/usage", params={"account": ACCOUNT, **extra})
                    r.raise_for_status()
                    return r.json()["usage"]

                page()  # connections and caches warm, as on a live server
                a, b = side_by_side(
                    f"GET /v1/usage, one account, all time, {ROUNDS} rounds",
                    page,
                    lambda: page(**{"from": "1"}),
                )
                print(f"  same result: {agree(a, b)}")
        finally:
            server.stop()
    finally:
        db.close()
        drop()


if __name__ == "__main__":
    main()
