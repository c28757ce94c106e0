"""The durable job queue on both databases: idempotent enqueue, queue order, safe concurrent
claims (threads and separate engines), leases that expire and are reclaimed, owner-checked
writes, and the runner, including a worker process killed with SIGKILL mid-job."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from inferd.jobs import ClaimedJob, GiveUp, JobQueue, JobRunner, RetryLater
from inferd.store.db import Database
from inferd.store.jobs_tables import Job
from tests.pg_schema import own_schema

LEASE_S = 0.3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with own_schema("inferd_jobs_test") as url:
        db = Database(url)
        db.migrate()
        db.close()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'inferd.db'}"
        db = Database(url)
        db.migrate()
    else:
        url = request.getfixturevalue("postgres_url")
        db = Database(url)
        with db.session() as s, s.begin():
            s.execute(delete(Job))
    db.close()
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def queue(db: Database) -> JobQueue:
    return JobQueue(db)


def job_row(db: Database, key: str) -> Job:
    with db.session() as s:
        row = s.scalar(select(Job).where(Job.key == key))
    assert row is not None
    return row


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def async_wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- the queue ---------------------------------------------------------------------------------


def test_enqueue_is_idempotent(queue: JobQueue) -> None:
    assert queue.enqueue("webhook", "webhook:req_1", "req_1")
    assert not queue.enqueue("webhook", "webhook:req_1", "req_1")
    keys = [f"batch:batch_1:line-{i}" for i in range(2000)]
    started = time.monotonic()
    assert queue.enqueue_many("batch_line", "batch_1", [*keys, keys[0]], priority=200) == 2000
    assert time.monotonic() - started < 5  # thousands of lines: one transaction, not 2000
    assert queue.enqueue_many("batch_line", "batch_1", keys) == 0  # a resubmitted batch
    assert queue.enqueue_many("batch_line", "batch_1", [*keys[:10], "batch:batch_1:new"]) == 1
    assert queue.counts("batch_1")["queued"] == 2001
    assert queue.counts("req_1") == {
        "queued": 1,
        "running": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
    }


def test_claims_in_priority_then_run_at_order(queue: JobQueue) -> None:
    now = datetime.now(UTC)
    queue.enqueue("k", "bulk-new", "r", priority=100, run_at=now - timedelta(seconds=2))
    queue.enqueue("k", "bulk-old", "r", priority=100, run_at=now - timedelta(seconds=5))
    queue.enqueue("k", "urgent", "r", priority=10, run_at=now)
    queue.enqueue("k", "urgent-later", "r", priority=10, run_at=now + timedelta(seconds=60))
    queue.enqueue("other", "other-kind", "r", priority=0)

    first = queue.claim("a", ["k"], 1, 30)
    assert [job.key for job in first] == ["urgent"]
    assert first[0].attempts == 1 and first[0].lease_owner == "a"
    assert first[0].lease_until > datetime.now(UTC)
    rest = queue.claim("a", ["k"], 10, 30)
    assert [job.key for job in rest] == ["bulk-old", "bulk-new"]  # not the one due in 60 s
    assert queue.claim("a", ["k"], 10, 30) == []
    assert [job.key for job in queue.claim("a", ["k", "other"], 10, 30)] == ["other-kind"]


@pytest.mark.parametrize("engines", [1, 2], ids=["threads", "two-engines"])
def test_concurrent_claimers_never_share_a_job(db_url: str, engines: int) -> None:
    # Four claimers race over 200 jobs: on one engine (threads of one process) or spread over
    # two engines (as two gateway processes would be).
    databases = [Database(db_url) for _ in range(engines)]
    queues = [JobQueue(d) for d in databases]
    total = 200
    assert queues[0].enqueue_many("k", "race", [f"race:{i}" for i in range(total)]) == total
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def claimer(index: int) -> None:
        q = queues[index % engines]
        owner = f"claimer-{index}"
        try:
            barrier.wait()
            while True:
                jobs = q.claim(owner, ["k"], 7, 30)
                if not jobs:
                    if q.counts("race")["queued"] == 0:
                        return
                    continue  # rows another claimer holds locked were skipped
                for job in jobs:
                    assert job.lease_owner == owner and job.attempts == 1
                    claimed[index].append(job.id)
                    assert q.complete(job.id, owner)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for d in databases:
        d.close()
    assert not errors, errors
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == total and len(set(every)) == total
    assert sum(1 for ids in claimed if ids) >= 2  # they did race
    assert queues[0].counts("race")["done"] == total


def test_expired_lease_is_reclaimed_and_the_old_owner_locked_out(queue: JobQueue) -> None:
    queue.enqueue("k", "job", "r")
    [mine] = queue.claim("a", ["k"], 5, LEASE_S)
    assert queue.claim("b", ["k"], 5, LEASE_S) == []  # held
    time.sleep(LEASE_S + 0.1)  # a stalls (or dies) past its lease
    [theirs] = queue.claim("b", ["k"], 5, 30)
    assert theirs.id == mine.id and theirs.attempts == 2 and theirs.lease_owner == "b"
    # a wakes up: none of its writes land on b's job.
    assert not queue.extend(mine.id, "a", 30)
    assert not queue.complete(mine.id, "a")
    assert not queue.fail(mine.id, "a", "late")
    assert not queue.retry(mine.id, "a", datetime.now(UTC), "late")
    assert queue.complete(theirs.id, "b")
    assert queue.counts("r")["done"] == 1


def test_writes_are_owner_checked(queue: JobQueue, db: Database) -> None:
    queue.enqueue("k", "job", "r")
    [job] = queue.claim("a", ["k"], 1, LEASE_S)
    assert not queue.complete(job.id, "b")
    assert not queue.fail(job.id, "b", "x")
    assert not queue.retry(job.id, "b", datetime.now(UTC), "x")
    assert not queue.extend(job.id, "b", 30)
    assert job_row(db, "job").state == "running"
    # An expired lease nobody reclaimed is still its owner's to renew or finish.
    time.sleep(LEASE_S + 0.1)
    assert queue.extend(job.id, "a", 60)
    assert queue.fail(job.id, "a", "x" * 500)
    assert not queue.complete(job.id, "a")  # finished already
    row = job_row(db, "job")
    assert row.state == "failed" and row.finished_at is not None
    assert row.last_error == "x" * 200


def test_retry_later(queue: JobQueue, db: Database) -> None:
    queue.enqueue("k", "job", "r")
    [job] = queue.claim("a", ["k"], 1, 30)
    at = datetime.now(UTC) + timedelta(seconds=0.4)
    assert queue.retry(job.id, "a", at, "http 503")
    row = job_row(db, "job")
    assert (row.state, row.lease_owner, row.last_error) == ("queued", None, "http 503")
    assert queue.claim("a", ["k"], 1, 30) == []  # not before its time
    time.sleep(0.5)
    [again] = queue.claim("b", ["k"], 1, 30)
    assert again.id == job.id and again.attempts == 2 and again.last_error == "http 503"


def test_cancel_counts_and_purge(queue: JobQueue) -> None:
    queue.enqueue_many("batch_line", "batch_9", ["l1", "l2", "l3"])
    queue.enqueue("webhook", "w1", "batch_9")
    [running] = queue.claim("a", ["batch_line"], 1, 30)
    assert queue.cancel("batch_line", "batch_9") == 2  # the queued lines; not the running one
    assert queue.counts("batch_9") == {
        "queued": 1,
        "running": 1,
        "done": 0,
        "failed": 0,
        "cancelled": 2,
    }
    assert queue.claim("b", ["batch_line"], 5, 30) == []
    assert queue.complete(running.id, "a")
    assert queue.purge_finished(timedelta(hours=1)) == 0  # recent history stays
    assert queue.purge_finished(timedelta(0)) == 3
    assert queue.counts("batch_9")["queued"] == 1  # live work is never purged
    assert queue.enqueue("batch_line", "l1", "batch_9")  # a purged key is free again


# -- the runner --------------------------------------------------------------------------------


def test_runner_completes_jobs_within_its_concurrency(queue: JobQueue, db: Database) -> None:
    seen: list[ClaimedJob] = []
    active = 0
    peak = 0

    async def handler(job: ClaimedJob) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        seen.append(job)
        active -= 1

    async def main() -> None:
        runner = JobRunner(queue, lease_s=LEASE_S, poll_s=0.1)
        runner.handle("k", handler, concurrency=3)
        await runner.start()
        await asyncio.to_thread(queue.enqueue_many, "k", "r", [f"job-{i}" for i in range(20)])
        runner.poke()
        await async_wait_for(lambda: queue.counts("r")["done"] == 20)
        await runner.close()

    asyncio.run(main())
    assert sorted(job.key for job in seen) == sorted(f"job-{i}" for i in range(20))
    assert 1 < peak <= 3
    assert all(job.attempts == 1 for job in seen)


def test_runner_renews_the_lease_of_a_long_handler(queue: JobQueue, db: Database) -> None:
    lease_s = 0.5  # renewed every lease_s / 3: room for a busy machine's stalls

    async def slow(job: ClaimedJob) -> None:
        await asyncio.sleep(3 * lease_s)

    async def main() -> None:
        runner = JobRunner(queue, lease_s=lease_s, poll_s=0.05)
        runner.handle("k", slow)
        await runner.start()
        await asyncio.to_thread(queue.enqueue, "k", "job", "r")
        runner.poke()
        await async_wait_for(lambda: queue.counts("r")["running"] == 1)
        # Another process never gets it meanwhile.
        while await asyncio.to_thread(lambda: queue.counts("r")["running"]):
            assert await asyncio.to_thread(queue.claim, "other", ["k"], 1, 30) == []
            await asyncio.sleep(0.05)
        await runner.close()

    asyncio.run(main())
    row = job_row(db, "job")
    assert row.state == "done" and row.attempts == 1


def test_runner_retries_and_gives_up(
    queue: JobQueue, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "canary-prompt-7f3a"  # an exception message that quotes content

    async def flaky(job: ClaimedJob) -> None:
        if job.attempts < 3:
            raise ValueError(canary)

    async def later(job: ClaimedJob) -> None:
        if job.attempts == 1:
            raise RetryLater(timedelta(seconds=0.2), "http 503")

    async def hopeless(job: ClaimedJob) -> None:
        raise GiveUp("http 410")

    async def broken(job: ClaimedJob) -> None:
        raise RuntimeError(canary)

    async def main() -> None:
        runner = JobRunner(queue, lease_s=LEASE_S, poll_s=0.05, max_attempts=3, backoff_s=0.05)
        for kind, handler in (
            ("flaky", flaky),
            ("later", later),
            ("hopeless", hopeless),
            ("broken", broken),
        ):
            runner.handle(kind, handler)
            await asyncio.to_thread(queue.enqueue, kind, kind, "r")
        await runner.start()
        await async_wait_for(lambda: queue.counts("r")["done"] + queue.counts("r")["failed"] == 4)
        await runner.close()

    with caplog.at_level(logging.DEBUG, logger="inferd.jobs"):
        asyncio.run(main())
    states = {key: job_row(db, key) for key in ("flaky", "later", "hopeless", "broken")}
    assert (states["flaky"].state, states["flaky"].attempts) == ("done", 3)
    assert states["flaky"].last_error == "ValueError"
    assert (states["later"].state, states["later"].attempts) == ("done", 2)
    assert (states["hopeless"].state, states["hopeless"].last_error) == ("failed", "http 410")
    assert states["hopeless"].attempts == 1
    assert (states["broken"].state, states["broken"].attempts) == ("failed", 3)
    assert states["broken"].last_error == "RuntimeError"
    # Logs name the job and the error's type, never its message.
    assert any("flaky" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert canary not in record.getMessage()
        assert canary not in str(record.__dict__)


def test_a_dead_owners_claim_is_picked_up_after_its_lease(queue: JobQueue, db: Database) -> None:
    queue.enqueue("k", "job", "r")
    [claimed] = queue.claim("vanished-process", ["k"], 1, LEASE_S)
    lease_end = claimed.lease_until
    runs: list[tuple[ClaimedJob, datetime]] = []

    async def handler(job: ClaimedJob) -> None:
        runs.append((job, datetime.now(UTC)))

    async def main() -> None:
        runner = JobRunner(queue, lease_s=LEASE_S, poll_s=0.05)
        runner.handle("k", handler)
        await runner.start()
        await async_wait_for(lambda: queue.counts("r")["done"] == 1)
        await runner.close()

    asyncio.run(main())
    [(job, at)] = runs
    assert job.attempts == 2 and at >= lease_end


def test_close_hands_an_interrupted_job_back(queue: JobQueue, db: Database) -> None:
    async def stuck(job: ClaimedJob) -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        runner = JobRunner(queue, lease_s=30, poll_s=0.05)
        runner.handle("k", stuck)
        await runner.start()
        await asyncio.to_thread(queue.enqueue, "k", "job", "r")
        runner.poke()
        await async_wait_for(lambda: queue.counts("r")["running"] == 1)
        await runner.close(timeout_s=0.2)

    asyncio.run(main())
    row = job_row(db, "job")
    assert (row.state, row.lease_owner, row.last_error) == ("queued", None, "interrupted")
    # Due at once, not after its 30 s lease.
    [again] = queue.claim("next-process", ["k"], 1, 30)
    assert again.attempts == 2


CHILD = """
import asyncio, sys
from inferd.jobs import JobQueue, JobRunner
from inferd.store.db import Database

async def hang(job):
    await asyncio.Event().wait()

async def main():
    runner = JobRunner(JobQueue(Database(sys.argv[1])), lease_s=float(sys.argv[2]), poll_s=0.05)
    runner.handle("k", hang)
    await runner.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_sigkill_mid_job_loses_nothing(db_url: str, queue: JobQueue, db: Database) -> None:
    lease_s = 1.0  # longer than the child's start-up stalls on a busy machine
    queue.enqueue_many("k", "r", ["a", "b"])
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(lease_s)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: queue.counts("r")["running"] == 2, timeout=30)
        assert child.poll() is None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    seen: list[ClaimedJob] = []

    async def handler(job: ClaimedJob) -> None:
        seen.append(job)

    async def main() -> None:
        runner = JobRunner(queue, lease_s=LEASE_S, poll_s=0.05)  # the restarted server
        runner.handle("k", handler)
        await runner.start()
        await async_wait_for(lambda: queue.counts("r")["done"] == 2)
        await runner.close()

    asyncio.run(main())
    assert sorted(job.key for job in seen) == ["a", "b"]
    assert all(job.attempts == 2 for job in seen)


def test_migration_downgrade_drops_the_table(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    from inferd.store.db import MIGRATIONS

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    assert "jobs" in inspect(db.engine).get_table_names()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
    assert "jobs" not in inspect(db.engine).get_table_names()
    db.migrate()
    assert "jobs" in inspect(db.engine).get_table_names()
    db.close()
