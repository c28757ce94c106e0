"""Daily usage rollups on SQLite and PostgreSQL: the ledger's upserts equal the raw rows'
aggregation (requests, errors, both uptime routes, once-rows written once, several days, keys,
models and accounts); migration 0013's backfill gives the same rollups; `summary` reads them for
whole-day bounds and the raw rows for sub-day ones, with the same results."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from random import Random
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, insert, select, text

from inferd.billing.ledger import (
    CONTAINER_ROUTE,
    UPTIME_ROUTE,
    UsageLedger,
    UsageRecord,
    parse_when,
)
from inferd.store.db import MIGRATIONS, Database, normalise_url
from inferd.store.models import Usage
from inferd.store.usage_tables import SUMS, UsageDaily

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
ACCOUNTS = ("acct_a", "acct_b")
MODELS = ("m/a", "m/B", "Z/c", "m/a-2")  # mixed case: sorted by Python, not by a collation
KEYS = ("auto", "ci", "dev")
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)

Key = tuple[str, date, str, str]


# -- databases -------------------------------------------------------------------------------


def _admin(statement: str) -> None:
    engine = create_engine(
        normalise_url(f"{PG_SERVER}/postgres"),
        isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE refuse a transaction
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A database of this module's own (other suites reset the shared one's schema)."""
    name = f"inferd_rollups_{secrets.token_hex(4)}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except Exception:
        pytest.skip("PostgreSQL not reachable")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_fresh_ids = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fresh_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], str]:
    """Makes the URL of an empty database of the backend: a file, or a schema of our own."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("rollups")
        return lambda: f"sqlite:///{folder / f'{next(_fresh_ids)}.db'}"
    base = request.getfixturevalue("pg_database")

    def schema() -> str:
        name = f"s{next(_fresh_ids)}"
        engine = create_engine(normalise_url(base))
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
        engine.dispose()
        return f"{base}?options=-csearch_path%3D{name}"

    return schema


def migrated(url: str, revision: str = "head") -> Database:
    """`Database.migrate`, to any revision."""
    db = Database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return db


# -- rows ------------------------------------------------------------------------------------


def record(
    request_id: str,
    at: datetime,
    *,
    account: str = "acct_a",
    model: str = "m/a",
    key: str = "auto",
    route: str = "native_text_generation",
    status: int = 200,
    tokens: tuple[int, int] = (3, 4),
    cost: float = 0.5,
    duration_ms: int = 12,
) -> UsageRecord:
    return UsageRecord(
        request_id, account, key, None, model, route, status, *tokens, cost, at, duration_ms
    )


def mix(seed: int = 7, n: int = 500) -> list[tuple[UsageRecord, bool]]:
    """Requests (some failed), uptime rows of both routes, once-rows whose ids repeat (with
    other figures each time) within and across flushes, over 4 days and their midnights."""
    rng = Random(seed)
    out = []
    for i in range(n):
        at = DAY0 + timedelta(seconds=rng.uniform(0, 4 * 86400))
        if i % 37 == 0:  # the edges of the days: midnight and the microsecond before
            k = i // 37
            at = DAY0 + timedelta(days=k % 4, microseconds=-(k // 4 % 2))
        kind = rng.random()
        common: dict[str, Any] = {
            "account": rng.choice(ACCOUNTS),
            "model": rng.choice(MODELS),
            "cost": round(rng.uniform(0, 0.01), 6),
        }
        if kind < 0.15:
            route = UPTIME_ROUTE if kind < 0.08 else CONTAINER_ROUTE
            row = record(
                f"uptime-{i}",
                at,
                route=route,
                key="",
                tokens=(0, 0),
                duration_ms=rng.randrange(1, 60_000),
                **common,
            )
            out.append((row, False))
            continue
        once = kind > 0.8
        request_id = f"job-{rng.randrange(40)}" if once else f"req-{i}"
        if once and rng.random() < 0.1:
            request_id = "req-3"  # an id a plain row already holds: never written again
        row = record(
            request_id,
            at,
            key=rng.choice(KEYS),
            status=rng.choice((200, 200, 200, 200, 400, 429, 500)),
            tokens=(rng.randrange(500), rng.randrange(500)),
            **common,
        )
        out.append((row, once))
    return out


def write(db: Database, rows: list[tuple[UsageRecord, bool]], per_flush: int = 60) -> None:
    ledger = UsageLedger(db)

    async def run() -> None:
        for i, (row, once) in enumerate(rows, 1):
            ledger.record(row, once=once)
            if i % per_flush == 0:
                assert await ledger.flush()
        assert await ledger.flush()

    asyncio.run(run())


# -- truths ----------------------------------------------------------------------------------


def raw_rollups(db: Database) -> dict[Key, tuple]:
    """The rollups computed in Python from every raw row written."""
    sums: dict[Key, list] = {}
    with db.session() as s:
        for u in s.scalars(select(Usage)):
            at = u.started_at if u.started_at.tzinfo is None else u.started_at.astimezone(UTC)
            g = sums.setdefault(
                (u.account_id, at.date(), u.model, u.key_name), [0, 0, 0, 0, 0.0, 0.0]
            )
            g[4] += u.cost
            if u.route in (UPTIME_ROUTE, CONTAINER_ROUTE):
                g[5] += u.duration_ms / 1000
            else:
                g[0] += 1
                g[1] += u.status >= 400
                g[2] += u.prompt_tokens
                g[3] += u.completion_tokens
    return {k: tuple(v) for k, v in sums.items()}


def stored_rollups(db: Database) -> dict[Key, tuple]:
    with db.session() as s:
        return {
            (r.account_id, r.day, r.model, r.key_name): tuple(getattr(r, c) for c in SUMS)
            for r in s.scalars(select(UsageDaily))
        }


def assert_same(got: Any, want: Any) -> None:
    """Equal, floats up to summation order (pytest.approx does not nest)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    else:
        assert got == want and type(got) is type(want)


# -- tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(fresh_url: Callable[[], str]) -> Iterator[Database]:
    db = migrated(fresh_url())
    write(db, mix())
    yield db
    db.close()


def test_upserts_equal_the_raw_rows(live: Database) -> None:
    with live.session() as s:
        ids = [r for r in s.scalars(select(Usage.request_id)) if r.startswith("job-")]
        plain_3 = s.scalar(select(Usage).where(Usage.request_id == "req-3"))
    assert len(ids) == len(set(ids)) > 10  # each once-id written once ...
    assert plain_3 is not None and plain_3.route == "native_text_generation"
    stored, raw = stored_rollups(live), raw_rollups(live)
    assert stored.keys() == raw.keys()
    assert_same(stored, raw)  # ... and only what was written was counted
    days = {k[1] for k in stored}
    assert days == {date(2026, 3, d) for d in range(1, 5)} | {date(2026, 2, 28)}
    assert any(v[5] > 0 for v in stored.values()) and any(v[1] > 0 for v in stored.values())


def test_summary_from_rollups_equals_raw(live: Database) -> None:
    ledger = UsageLedger(live)
    for account, model, key in itertools.product(ACCOUNTS, (None, "m/B"), (None, "ci", "")):
        raw = ledger.raw_summary(account, None, None, model, key)
        assert raw, (account, model, key)
        assert_same(ledger.summary(account, None, None, model, key), raw)
        assert [r["date"] for r in raw] == sorted(r["date"] for r in raw)
        first, stop = parse_when("2026-03-02"), parse_when("2026-03-03", end=True)
        assert_same(
            ledger.summary(account, first, stop, model, key),
            ledger.raw_summary(account, first, stop, model, key),
        )
    with live.session() as s:
        for account in ACCOUNTS:
            raw_total = sum(s.scalars(select(Usage.cost).where(Usage.account_id == account)))
            assert_same(ledger.total(f"acct:{account}"), raw_total)
    assert ledger.total("acct:nobody") == 0.0


# Columns of `usage` that migrations after 0013 added: a 0012 database has none of them.
LATER = {"id", "served_by"}


def test_backfill_equals_the_upserts(live: Database, fresh_url: Callable[[], str]) -> None:
    """Migration 0013 over a database holding the same raw rows, written before it."""
    old = migrated(fresh_url(), "0012")
    with live.session() as s:
        rows = [
            {c.name: getattr(u, c.key) for c in Usage.__table__.columns if c.name not in LATER}
            for u in s.scalars(select(Usage))
        ]
    with old.engine.begin() as conn:
        conn.execute(insert(Usage), rows)
    old.close()
    backfilled = migrated(old.url)
    try:
        want = stored_rollups(live)
        got = stored_rollups(backfilled)
        assert got.keys() == want.keys()
        assert_same(got, want)
        # ... and the ledger goes on adding to the backfilled rollups.
        extra = record("after", DAY0 + timedelta(hours=1), cost=0.25)
        write(backfilled, [(extra, False)])
        key = ("acct_a", date(2026, 3, 1), "m/a", "auto")
        assert_same(stored_rollups(backfilled)[key][4], want.get(key, (0,) * 6)[4] + 0.25)
    finally:
        backfilled.close()


def test_summary_bounds(fresh_url: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = migrated(fresh_url())
    day = datetime(2026, 3, 2, tzinfo=UTC)
    write(
        db,
        [
            (record("r1", day - timedelta(minutes=30), cost=1.0), False),
            (record("r2", day, cost=2.0, key="k2"), False),
            (
                record(
                    "r3", day + timedelta(hours=12), route=UPTIME_ROUTE, cost=4.0, duration_ms=3000
                ),
                False,
            ),
            (record("r4", day + timedelta(days=1, microseconds=-1), status=500, cost=8.0), False),
            (record("r5", day + timedelta(days=1), cost=16.0), False),
        ],
    )
    ledger = UsageLedger(db)

    def one_day(
        requests: int, errors: int, cost: float, uptime: float, d: str = "2026-03-02"
    ) -> dict[str, Any]:
        tokens = (3 * requests, 4 * requests)
        return {
            "date": d,
            "model": "m/a",
            "requests": requests,
            "errors": errors,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "cost": cost,
            "uptime_seconds": uptime,
        }

    def refuse(*_: Any) -> None:
        raise AssertionError("the other path")

    # Whole UTC days, however written: the rollups.
    with monkeypatch.context() as m:
        m.setattr(ledger, "raw_summary", refuse)
        march_2 = one_day(2, 1, 14.0, 3.0)
        for first, last in (
            ("2026-03-02", "2026-03-02"),
            ("2026-03-02T05:00:00+05:00", "2026-03-03T00:00:00Z"),
            (str(int(day.timestamp())), str(int(day.timestamp()) + 86400)),
        ):
            end = parse_when(last, end=len(last) == 10)
            assert ledger.summary("acct_a", parse_when(first), end, None, None) == [march_2]
        assert ledger.summary("acct_a", day, None, None, "k2") == [one_day(1, 0, 2.0, 0.0)]
        assert [r["date"] for r in ledger.summary("acct_a", None, day, None, None)] == [
            "2026-03-01"
        ]
        assert ledger.summary("acct_a", parse_when("2999-01-01"), None, None, None) == []
    # Sub-day bounds: the raw rows.
    with monkeypatch.context() as m:
        m.setattr(ledger, "daily_summary", refuse)
        got = ledger.summary(
            "acct_a",
            parse_when("2026-03-02T06:00:00Z"),
            parse_when(str(int(day.timestamp()) + 86401)),
            None,
            None,
        )
        assert got == [one_day(1, 1, 12.0, 3.0), one_day(1, 0, 16.0, 0.0, "2026-03-03")]
        # An offset is a UTC instant on SQLite too (23:30+01:00 is 22:30Z: r4 and r5).
        late = ledger.summary("acct_a", parse_when("2026-03-02T23:30:00+01:00"), None, None, None)
        assert late == [one_day(1, 1, 8.0, 0.0), one_day(1, 0, 16.0, 0.0, "2026-03-03")]
    with pytest.raises(ValueError):
        parse_when("9999-12-31", end=True)
    db.close()
