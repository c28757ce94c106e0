"""Runs queued jobs inside a gateway process.

One asyncio loop per process claims jobs of the kinds it has handlers for (at most `concurrency`
running per kind), runs `await handler(job)`, renews each job's lease while its handler runs, and
records the outcome: returned → done; `RetryLater` → queued again at the handler's time;
`GiveUp` → failed; any other exception → retried with exponential backoff until `max_attempts`,
then failed. A job claimed more than `max_attempts` times (its process kept dying under it) is
failed without running again.

The loop claims when poked (`poke()`, e.g. right after an enqueue) and otherwise every `poll_s`.
Logs carry metadata only: job id, kind, attempt, the exception's type (never its message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from inferd.jobs.queue import ClaimedJob, JobQueue

log = logging.getLogger("inferd.jobs")

Handler = Callable[[ClaimedJob], Coroutine[Any, Any, None]]


class RetryLater(Exception):
    """Raised by a handler: run the job again at `at` (a time, or a delay from now).
    `reason` is stored and logged: a short code such as `http 503`, never content."""

    def __init__(self, at: datetime | timedelta, reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason

    def when(self) -> datetime:
        return datetime.now(UTC) + self.at if isinstance(self.at, timedelta) else self.at


class GiveUp(Exception):
    """Raised by a handler: the job failed for good. `reason` as for RetryLater."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def default_owner() -> str:
    """Unique per runner: a process restarted on the same host must not pass for its
    predecessor, whose leases have to expire before its jobs run again."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


# Called once a job of the kind is marked failed for good (its owner's row must say so).
OnFailed = Callable[[ClaimedJob], Coroutine[Any, Any, None]]


@dataclass
class _Kind:
    handler: Handler
    concurrency: int
    max_attempts: int
    on_failed: OnFailed | None = None
    runs: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # job id → _run
    work: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # job id → handler


class JobRunner:
    def __init__(
        self,
        queue: JobQueue,
        *,
        owner: str | None = None,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        max_attempts: int = 8,
        backoff_s: float = 5.0,
        backoff_max_s: float = 3600.0,
    ) -> None:
        self.queue = queue
        self.owner = owner or default_owner()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._kinds: dict[str, _Kind] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None

    def handle(
        self,
        kind: str,
        handler: Handler,
        *,
        concurrency: int = 4,
        max_attempts: int | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        """Run jobs of `kind` with `handler`, at most `concurrency` at a time (before start).
        `max_attempts` overrides the runner's (claims, RetryLater rounds included);
        `on_failed` runs when a job of the kind fails for good."""
        attempts = self.max_attempts if max_attempts is None else max_attempts
        self._kinds[kind] = _Kind(handler, concurrency, attempts, on_failed)

    def poke(self) -> None:
        """Claim now rather than at the next poll (call from the event loop's thread)."""
        self._wake.set()

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="job-runner")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop claiming and let running handlers finish for up to `timeout_s`; then cancel
        them and put their jobs back in the queue, due now, so another process (or this one
        after a restart) resumes them at once instead of after their lease. The interrupted
        run counts as an attempt: a handler that never finishes cannot retry forever."""
        if self._loop_task is None or self._closing:
            return
        self._closing = True
        self._wake.set()
        await self._loop_task  # the claim in flight, if any, starts its jobs first
        runs = [run for kind in self._kinds.values() for run in kind.runs.values()]
        if not runs:
            return
        _, pending = await asyncio.wait(runs, timeout=timeout_s)
        if not pending:
            return
        for kind in self._kinds.values():
            for work in kind.work.values():
                work.cancel()
        # Each run now records the release; one whose handler ignores cancellation is dropped
        # and its lease (no longer renewed) expires.
        _, stuck = await asyncio.wait(pending, timeout=5.0)
        for run in stuck:
            run.cancel()

    # -- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._claim_round()
            except Exception as exc:  # the database is unreachable: try again next poll
                log.error("job claim failed", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _claim_round(self) -> None:
        for name, kind in self._kinds.items():
            free = kind.concurrency - len(kind.runs)
            if free <= 0:
                continue
            jobs = await asyncio.to_thread(self.queue.claim, self.owner, [name], free, self.lease_s)
            for job in jobs:
                if job.id in kind.runs:
                    # Our own job, reclaimed after renewals failed: its handler still runs,
                    # and the claim has renewed its lease.
                    continue
                if job.attempts > kind.max_attempts:
                    log.warning(
                        "job %s (%s) claimed %s times; failed without running",
                        job.id,
                        job.kind,
                        job.attempts,
                    )
                    if await asyncio.to_thread(
                        self.queue.fail, job.id, self.owner, "attempts exhausted"
                    ):
                        await self._failed(kind, job)
                    continue
                kind.runs[job.id] = asyncio.create_task(self._run(kind, job))

    # -- one job ------------------------------------------------------------------------------

    async def _run(self, kind: _Kind, job: ClaimedJob) -> None:
        work = asyncio.create_task(kind.handler(job), name=f"job-{job.id}")
        kind.work[job.id] = work
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(job, work, lost))
        try:
            await asyncio.wait({work})
            renewer.cancel()
            await self._settle(kind, job, work, lost.is_set())
        except Exception as exc:  # the database is unreachable: the lease expires, it reruns
            log.error(
                "job %s (%s) outcome not recorded",
                job.id,
                job.kind,
                extra={"error": type(exc).__name__},
            )
        finally:
            renewer.cancel()
            work.cancel()  # a no-op unless this run itself was cancelled
            kind.runs.pop(job.id, None)
            kind.work.pop(job.id, None)
            self._wake.set()  # a slot is free

    async def _renew(self, job: ClaimedJob, work: asyncio.Task[None], lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await asyncio.to_thread(self.queue.extend, job.id, self.owner, self.lease_s)
            except Exception as exc:  # try again before the lease runs out
                log.warning(
                    "job %s lease renewal failed", job.id, extra={"error": type(exc).__name__}
                )
                continue
            if not held:
                # Another process reclaimed it (we stalled past the lease): it runs the job now,
                # so this copy stops and records nothing.
                log.warning("job %s (%s) lease lost; stopping its handler", job.id, job.kind)
                lost.set()
                work.cancel()
                return

    async def _failed(self, kind: _Kind, job: ClaimedJob) -> None:
        if kind.on_failed is None:
            return
        try:
            await kind.on_failed(job)
        except Exception as exc:
            log.error(
                "job %s (%s) on_failed raised",
                job.id,
                job.kind,
                extra={"error": type(exc).__name__},
            )

    async def _settle(
        self, kind: _Kind, job: ClaimedJob, work: asyncio.Task[None], lost: bool
    ) -> None:
        # Retrieved in every case: asyncio would otherwise log an unretrieved exception with its
        # message, which may quote content.
        exc = None if work.cancelled() else work.exception()
        if lost:
            return
        q, owner, now = self.queue, self.owner, datetime.now(UTC)
        if work.cancelled():  # close(): hand it back, due now
            recorded = await asyncio.to_thread(q.retry, job.id, owner, now, "interrupted")
        elif exc is None:
            recorded = await asyncio.to_thread(q.complete, job.id, owner)
        elif isinstance(exc, RetryLater):
            recorded = await asyncio.to_thread(q.retry, job.id, owner, exc.when(), exc.reason)
        elif isinstance(exc, GiveUp):
            recorded = await asyncio.to_thread(q.fail, job.id, owner, exc.reason)
            if recorded:
                await self._failed(kind, job)
        else:
            error = type(exc).__name__  # its message may quote content
            if job.attempts >= kind.max_attempts:
                log.warning(
                    "job %s (%s) attempt %s failed; giving up",
                    job.id,
                    job.kind,
                    job.attempts,
                    extra={"error": error},
                )
                recorded = await asyncio.to_thread(q.fail, job.id, owner, error)
                if recorded:
                    await self._failed(kind, job)
            else:
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (job.attempts - 1))
                log.warning(
                    "job %s (%s) attempt %s failed; retrying in %.1fs",
                    job.id,
                    job.kind,
                    job.attempts,
                    delay,
                    extra={"error": error},
                )
                at = now + timedelta(seconds=delay)
                recorded = await asyncio.to_thread(q.retry, job.id, owner, at, error)
        if not recorded:
            log.warning("job %s (%s) outcome dropped: its lease was lost", job.id, job.kind)
