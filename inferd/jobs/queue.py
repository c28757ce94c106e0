"""The durable job queue: rows in the `jobs` table, claimed under a lease.

Every state change is one compare-and-set write, so the database is the only source of truth: a
process killed at any moment leaves its claimed jobs behind with a lease that expires, after which
any process claims them again (attempts + 1). Delivery is therefore at least once; handlers make
their effects idempotent (a webhook carries its id, a batch line its custom_id).

Several processes claim from one database: PostgreSQL hands each claimer rows the others have not
locked (`FOR UPDATE SKIP LOCKED`); SQLite serialises writers, so a claim is one UPDATE inside an
immediate (write-locked) transaction.

Methods are synchronous; async callers use `asyncio.to_thread`. Times are UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from inferd.store.db import Database
from inferd.store.jobs_tables import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED_STATES,
    QUEUED,
    RUNNING,
    Job,
)
from inferd.store.models import as_utc, utcnow

ERROR_MAX = 200  # last_error's column width


@dataclass(frozen=True)
class ClaimedJob:
    """A job this process holds until `lease_until` (renewed by `JobQueue.extend`)."""

    id: int
    kind: str
    key: str
    ref: str
    account_id: str | None
    priority: int
    attempts: int  # this claim included: 1 on the first run
    run_at: datetime
    lease_owner: str
    lease_until: datetime
    last_error: str | None  # the previous attempt's reason, if any


def _reason(error: str) -> str:
    return error[:ERROR_MAX]


_CLAIMED_COLUMNS = (
    Job.id,
    Job.kind,
    Job.key,
    Job.ref,
    Job.account_id,
    Job.priority,
    Job.attempts,
    Job.run_at,
    Job.lease_owner,
    Job.lease_until,
    Job.last_error,
)


def _claimed(row: Any) -> ClaimedJob:
    return ClaimedJob(
        id=row.id,
        kind=row.kind,
        key=row.key,
        ref=row.ref,
        account_id=row.account_id,
        priority=row.priority,
        attempts=row.attempts,
        run_at=as_utc(row.run_at),
        lease_owner=row.lease_owner,
        lease_until=as_utc(row.lease_until),
        last_error=row.last_error,
    )


class JobQueue:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.engine.dialect.name

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        key: str,
        ref: str,
        *,
        account_id: str | None = None,
        priority: int = 100,
        run_at: datetime | None = None,
    ) -> bool:
        """Queue one job; False (and no change) when a job with this key exists already."""
        added = self.enqueue_many(
            kind, ref, [key], account_id=account_id, priority=priority, run_at=run_at
        )
        return added == 1

    def enqueue_many(
        self,
        kind: str,
        ref: str,
        keys: Iterable[str],
        *,
        account_id: str | None = None,
        priority: int = 100,
        run_at: datetime | None = None,
    ) -> int:
        """Queue one job per key, all working on `ref` (a batch's lines), in one transaction.
        Keys already present are skipped; returns how many jobs were added."""
        now = utcnow()
        start = as_utc(run_at) if run_at else now
        rows = [
            {
                "kind": kind,
                "key": key,
                "ref": ref,
                "account_id": account_id,
                "priority": priority,
                "state": QUEUED,
                "attempts": 0,
                "run_at": start,
                "created_at": now,
                "updated_at": now,
            }
            for key in dict.fromkeys(keys)  # a repeated key in one call: once
        ]
        if not rows:
            return 0
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = insert(Job).on_conflict_do_nothing(index_elements=["key"]).returning(Job.id)
        with self.db.session() as s, s.begin():
            # Executemany with RETURNING: SQLAlchemy sends pages of multi-row INSERTs, and only
            # the rows actually inserted come back.
            return len(s.execute(stmt, rows).all())

    # -- claim --------------------------------------------------------------------------------

    def claim(
        self, owner: str, kinds: Collection[str], limit: int, lease_s: float
    ) -> list[ClaimedJob]:
        """Take up to `limit` due jobs of these kinds for `owner` until now + lease_s, in queue
        order (priority, then run_at). Due: queued with run_at passed, or running with a lease
        that expired (its process died or stalled). Each claim counts an attempt."""
        if limit <= 0 or not kinds:
            return []
        now = utcnow()
        due = (
            select(Job.id)
            .where(Job.kind.in_(list(kinds)))
            .where(
                ((Job.state == QUEUED) & (Job.run_at <= now))
                | ((Job.state == RUNNING) & (Job.lease_until < now))
            )
            .order_by(Job.priority, Job.run_at, Job.id)
            .limit(limit)
        )
        take = update(Job).values(
            state=RUNNING,
            attempts=Job.attempts + 1,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_s),
            updated_at=now,
        )
        with self.db.session() as s, s.begin():
            if self.dialect == "postgresql":
                # Rows another claimer holds locked are skipped, not waited for; ours stay
                # locked until commit, so the UPDATE below cannot race.
                ids = s.scalars(due.with_for_update(skip_locked=True)).all()
                if not ids:
                    return []
                rows = s.execute(take.where(Job.id.in_(ids)).returning(*_CLAIMED_COLUMNS)).all()
            else:
                _write_lock(s)
                rows = s.execute(take.where(Job.id.in_(due)).returning(*_CLAIMED_COLUMNS)).all()
        jobs = [_claimed(row) for row in rows]
        jobs.sort(key=lambda job: (job.priority, job.run_at, job.id))  # RETURNING has no order
        return jobs

    # -- the holder's writes: each applies only while `owner` still holds the job ---------------

    def extend(self, job_id: int, owner: str, lease_s: float) -> bool:
        """Renew the lease to now + lease_s. False: the job is no longer ours (another process
        reclaimed it after our lease expired, or it was finished)."""
        now = utcnow()
        return self._held_write(
            job_id, owner, lease_until=now + timedelta(seconds=lease_s), updated_at=now
        )

    def complete(self, job_id: int, owner: str) -> bool:
        now = utcnow()
        return self._held_write(
            job_id, owner, state=DONE, lease_until=None, finished_at=now, updated_at=now
        )

    def retry(self, job_id: int, owner: str, run_at: datetime, error: str) -> bool:
        """Back to the queue, claimable from `run_at`. `error` is a short reason, no content."""
        return self._held_write(
            job_id,
            owner,
            state=QUEUED,
            run_at=as_utc(run_at),
            lease_owner=None,
            lease_until=None,
            last_error=_reason(error),
            updated_at=utcnow(),
        )

    def fail(self, job_id: int, owner: str, error: str) -> bool:
        """Finished for good, unsuccessfully. `error` is a short reason, no content."""
        now = utcnow()
        return self._held_write(
            job_id,
            owner,
            state=FAILED,
            lease_until=None,
            last_error=_reason(error),
            finished_at=now,
            updated_at=now,
        )

    def _held_write(self, job_id: int, owner: str, **values: Any) -> bool:
        # Compare-and-set on (state, owner): a process whose lease expired and was reclaimed
        # cannot overwrite the new holder's result. An expired lease nobody took yet is still
        # ours: no one else ran the job, so finishing it is safe.
        with self.db.session() as s, s.begin():
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == RUNNING, Job.lease_owner == owner)
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- by object ----------------------------------------------------------------------------

    def cancel(self, kind: str, ref: str) -> int:
        """Withdraw the queued jobs of `kind` working on `ref` (running ones finish); returns
        how many were cancelled."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            result = s.execute(
                update(Job)
                .where(Job.kind == kind, Job.ref == ref, Job.state == QUEUED)
                .values(state=CANCELLED, finished_at=now, updated_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def counts(self, ref: str) -> dict[str, int]:
        """Jobs working on `ref` by state; every state is present (zero when none)."""
        with self.db.session() as s:
            rows = s.execute(
                select(Job.state, func.count()).where(Job.ref == ref).group_by(Job.state)
            ).all()
        found: Mapping[str, int] = {state: int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in (QUEUED, RUNNING, *FINISHED_STATES)}

    def purge_finished(self, older_than: timedelta) -> int:
        """Delete jobs that finished (done, failed, cancelled) more than `older_than` ago, so
        the table holds live work and recent history only; returns how many."""
        cutoff = utcnow() - older_than
        with self.db.session() as s, s.begin():
            result = s.execute(
                delete(Job).where(Job.state.in_(FINISHED_STATES), Job.finished_at < cutoff)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]


def _write_lock(s: Session) -> None:
    # SQLite: take the write lock before reading which jobs are due, so two claimers cannot
    # both read the same rows (the second waits on busy_timeout, then sees them claimed). The
    # driver has not begun a transaction yet, so this BEGIN is the transaction's own.
    s.execute(text("BEGIN IMMEDIATE"))


__all__ = ["CANCELLED", "DONE", "FAILED", "QUEUED", "RUNNING", "ClaimedJob", "JobQueue"]
