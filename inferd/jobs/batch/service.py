"""Batches (OpenAI's Batch API) as durable jobs.

  create     the batch row (status `validating`) and a `batch.validate` job; its input file is
             attached to it (purged when the batch ends) and a `batch.expire` job waits for the
             end of its completion window.
  validate   stream the input file line by line: each line checked, sealed with the batch's own
             key and stored as a `batch_lines` row; the first problems fail the batch, naming
             their lines. Then `in_progress`, and one `batch.line` job per line.
  line       replay the line through the same code as its HTTP call (the caller's identity,
             a request id derived from the batch and the line, so it is billed once however
             often it runs), seal the output line into its row, count it. Out of money: the
             batch pauses with a reason and the line waits; a full concurrency limit waits too.
  finalize   when every line is done (or the batch was cancelled or expired): write the output
             and error files in line order, purge the input, end in completed, cancelled or
             expired.

Every step checks the rows' states first, so a job run twice (its process was killed after the
work and before the job was marked done) does nothing twice. No line content is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, delete, select, update

from inferd.jobs.batch.lines import CheckBody, Checker
from inferd.jobs.files import FileInUse, FileNotFound, FileStore, lines
from inferd.jobs.queue import ClaimedJob, JobQueue
from inferd.jobs.runner import JobRunner, RetryLater
from inferd.store.batch_tables import Batch, BatchLine
from inferd.store.blobs import BlobStore
from inferd.store.db import Database
from inferd.store.models import utcnow

log = logging.getLogger("inferd.batches")

VALIDATE, LINE, FINALIZE, EXPIRE = "batch.validate", "batch.line", "batch.finalize", "batch.expire"
LINE_PRIORITY = 200  # after webhook runs (10): nobody waits on a batch line
INSERT_CHUNK = 500
LIVE = ("validating", "in_progress")
ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class LineResult:
    status: int  # the HTTP status the line's call answered
    request_id: str
    body: dict[str, Any]


# (principal as stored, endpoint, body, request id, price factor) -> what the call answered.
RunLine = Callable[[dict[str, Any], str, dict[str, Any], str, float], Awaitable[LineResult]]
# (principal as stored, endpoint, model) -> None when the caller may use the model, else why.
CheckModel = Callable[[dict[str, Any], str, str], Awaitable[str | None]]


class BatchError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class Paused(Exception):
    """The account's money ran out: the line waits, the batch says why."""


class Busy(Exception):
    """A limit is full or the model is starting: the line waits a little."""


class Batches:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        files: FileStore,
        queue: JobQueue,
        runner: JobRunner,
        *,
        completion_window_s: float,
        discount: float,
        concurrency: int,
        budget_retry_s: float = 30.0,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.files = files
        self.queue = queue
        self.runner = runner
        self.completion_window = timedelta(seconds=completion_window_s)
        self.price_factor = 1.0 - discount
        self.concurrency = concurrency
        self.budget_retry_s = budget_retry_s
        self._run_line: RunLine | None = None
        self._check_body: CheckBody | None = None
        self._check_model: CheckModel | None = None

    def serve(self, run_line: RunLine, check_body: CheckBody, check_model: CheckModel) -> None:
        """Register the job handlers; the callbacks run and check lines as the API would."""
        self._run_line, self._check_body, self._check_model = run_line, check_body, check_model
        self.runner.handle(VALIDATE, self._validate, concurrency=1)
        # A line waiting for money or a free slot retries for as long as its window lasts.
        self.runner.handle(LINE, self._line, concurrency=self.concurrency, max_attempts=100_000)
        self.runner.handle(FINALIZE, self._finalize, concurrency=1)
        self.runner.handle(EXPIRE, self._expire, concurrency=1)

    # -- the API's side -------------------------------------------------------------------------

    def create(
        self,
        account_id: str,
        principal: dict[str, Any],
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
        output_expires_s: float | None,
    ) -> Batch:
        batch_id = "batch_" + secrets.token_hex(12)
        try:
            self.files.attach(account_id, input_file_id, batch_id)
        except FileNotFound:
            raise BatchError(400, f"No file `{input_file_id}`.", "input_file_id") from None
        except FileInUse as exc:
            raise BatchError(400, str(exc), "input_file_id") from None
        now = utcnow()
        row = Batch(
            id=batch_id,
            account_id=account_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window="24h",
            status="validating",
            principal=json.dumps(principal),
            metadata_json=json.dumps(metadata) if metadata else None,
            output_expires_s=output_expires_s,
            total=0,
            completed=0,
            failed=0,
            created_at=now,
            expires_at=now + self.completion_window,
        )
        with self.db.session() as s, s.begin():
            s.add(row)
        self.queue.enqueue(VALIDATE, f"{VALIDATE}:{batch_id}", batch_id, account_id=account_id)
        self.queue.enqueue(
            EXPIRE,
            f"{EXPIRE}:{batch_id}",
            batch_id,
            account_id=account_id,
            run_at=row.expires_at,
        )
        self.runner.poke()
        return row

    def get(self, account_id: str, batch_id: str) -> Batch | None:
        with self.db.session() as s:
            row = s.get(Batch, batch_id)
        return row if row is not None and row.account_id == account_id else None

    def list(
        self, account_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[Batch], bool]:
        """A page of the account's batches and whether more follow."""
        with self.db.session() as s:
            query: Select[tuple[Batch]] = select(Batch).where(Batch.account_id == account_id)
            newest_first = order != "asc"
            if after is not None:
                cursor = s.get(Batch, after)
                if cursor is None or cursor.account_id != account_id:
                    raise BatchError(400, f"No batch `{after}` to list after.", "after")
                if newest_first:
                    query = query.where(
                        (Batch.created_at < cursor.created_at)
                        | ((Batch.created_at == cursor.created_at) & (Batch.id < cursor.id))
                    )
                else:
                    query = query.where(
                        (Batch.created_at > cursor.created_at)
                        | ((Batch.created_at == cursor.created_at) & (Batch.id > cursor.id))
                    )
            if newest_first:
                query = query.order_by(Batch.created_at.desc(), Batch.id.desc())
            else:
                query = query.order_by(Batch.created_at, Batch.id)
            rows = list(s.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def cancel(self, account_id: str, batch_id: str) -> Batch | None:
        """Stop a batch: no new line starts; the lines done so far are written out."""
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch_id, with_for_update=True)
            if row is None or row.account_id != account_id:
                return None
            if row.status in ENDED or row.status in ("cancelling", "finalizing"):
                if row.status in ("completed", "failed", "expired"):
                    raise BatchError(409, f"Batch `{batch_id}` is {row.status} already.")
                return row
            row.status, row.cancelling_at = "cancelling", utcnow()
        self.queue.cancel(LINE, batch_id)
        self.queue.cancel(VALIDATE, batch_id)
        self._queue_finalize(batch_id, account_id)
        return self.get(account_id, batch_id)

    # -- validate -------------------------------------------------------------------------------

    async def _validate(self, job: ClaimedJob) -> None:
        batch = await asyncio.to_thread(self._batch, job.ref)
        if batch is None or batch.status != "validating":
            return
        await asyncio.to_thread(self._clear_lines, batch.id)
        checker = Checker(batch.endpoint, self._check_body or (lambda _e, _b: None))
        try:
            stored = await asyncio.to_thread(self._store_lines, batch, checker)
        except FileNotFound:
            await asyncio.to_thread(
                self._fail, batch, [_error("file_not_found", "The input file is gone.")]
            )
            return
        errors = [e.as_dict() for e in checker.finish()]
        if not errors and checker.model is not None and self._check_model is not None:
            problem = await self._check_model(
                json.loads(batch.principal), batch.endpoint, checker.model
            )
            if problem is not None:
                errors = [_error("model_not_found", problem, param="body.model")]
        if errors:
            await asyncio.to_thread(self._clear_lines, batch.id)
            await asyncio.to_thread(self._fail, batch, errors)
            return
        await asyncio.to_thread(self._start, batch, stored, checker.model)
        self.runner.poke()

    def _store_lines(self, batch: Batch, checker: Checker) -> int:
        sealer, wrapped = self.blobs.record_key()
        with self.db.session() as s, s.begin():
            s.execute(update(Batch).where(Batch.id == batch.id).values(line_key=wrapped))
        _, chunks = self.files.open(batch.account_id, batch.input_file_id)
        pending: list[dict[str, Any]] = []
        stored = 0
        try:
            for number, raw in enumerate(lines(chunks), start=1):
                line = checker.line(raw, number)
                if line is None or checker.errors:
                    continue  # once the batch fails, checking goes on (to report), storing stops
                sealed = sealer.seal(f"{batch.id}:{number}:request", json.dumps(line.body).encode())
                pending.append(
                    {
                        "batch_id": batch.id,
                        "number": number,
                        "custom_id": line.custom_id,
                        "request": sealed,
                        "state": "queued",
                    }
                )
                if len(pending) >= INSERT_CHUNK:
                    stored += self._insert(pending)
            stored += self._insert(pending)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return stored

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        with self.db.session() as s, s.begin():
            s.execute(BatchLine.__table__.insert(), rows)
        count = len(rows)
        rows.clear()
        return count

    def _clear_lines(self, batch_id: str) -> None:
        with self.db.session() as s, s.begin():
            s.execute(delete(BatchLine).where(BatchLine.batch_id == batch_id))

    def _fail(self, batch: Batch, errors: list[dict[str, Any]]) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch.id, with_for_update=True)
            if row is None or row.status != "validating":
                return
            row.status, row.failed_at = "failed", utcnow()
            row.errors_json = json.dumps(errors)
        self.files.purge(batch.input_file_id)

    def _start(self, batch: Batch, total: int, model: str | None) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch.id, with_for_update=True)
            if row is None or row.status != "validating":
                return
            row.status, row.in_progress_at = "in_progress", utcnow()
            row.total, row.model = total, model
            numbers = list(
                s.scalars(select(BatchLine.number).where(BatchLine.batch_id == batch.id))
            )
        self.queue.enqueue_many(
            LINE,
            batch.id,
            [f"{LINE}:{batch.id}:{n}" for n in numbers],
            account_id=batch.account_id,
            priority=LINE_PRIORITY,
        )

    # -- lines ----------------------------------------------------------------------------------

    async def _line(self, job: ClaimedJob) -> None:
        number = int(job.key.rsplit(":", 1)[1])
        batch = await asyncio.to_thread(self._batch, job.ref)
        if batch is None or batch.status != "in_progress" or batch.line_key is None:
            return
        line = await asyncio.to_thread(self._line_row, batch.id, number)
        if line is None or line.state != "queued" or line.request is None:
            # Done already: by this job in a process killed before it queued the finalize
            # step (the line's count commits first), so queue it now (once, by its key).
            if batch.completed + batch.failed >= batch.total:
                await asyncio.to_thread(self._queue_finalize, batch.id, batch.account_id)
            return
        sealer = self.blobs.record_sealer(batch.id, batch.line_key)
        body = json.loads(sealer.open(f"{batch.id}:{number}:request", line.request))
        request_id = f"{batch.id}-{number}"
        assert self._run_line is not None
        result = await self._run_line(
            json.loads(batch.principal), batch.endpoint, body, request_id, self.price_factor
        )
        if result.status == 402:
            reason = result.body.get("error", {}).get("message", "Spending limit reached.")
            await asyncio.to_thread(self._pause, batch.id, reason)
            raise RetryLater(timedelta(seconds=self.budget_retry_s), "spending limit")
        if result.status in (429, 503):
            raise RetryLater(timedelta(seconds=2), f"status {result.status}")
        ok = 200 <= result.status < 300
        output = {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": line.custom_id,
            "response": {
                "status_code": result.status,
                "request_id": result.request_id,
                "body": result.body,
            },
            "error": None,
        }
        sealed = sealer.seal(f"{batch.id}:{number}:output", json.dumps(output).encode())
        done = await asyncio.to_thread(self._line_done, batch.id, number, sealed, ok)
        if done:
            self.runner.poke()

    def _line_done(self, batch_id: str, number: int, sealed: bytes, ok: bool) -> bool:
        """Store the output and count it, once: True when that was the batch's last line."""
        with self.db.session() as s, s.begin():
            changed = s.execute(
                update(BatchLine)
                .where(BatchLine.batch_id == batch_id, BatchLine.number == number)
                .where(BatchLine.state == "queued")
                .values(state="done", result=sealed, ok=ok, request=None)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                return False
            row = s.get(Batch, batch_id, with_for_update=True)
            assert row is not None
            if ok:
                row.completed += 1
            else:
                row.failed += 1
            row.pause_reason = None
            last = row.completed + row.failed >= row.total and row.status == "in_progress"
            account_id = row.account_id
        if last:
            self._queue_finalize(batch_id, account_id)
        return last

    def _pause(self, batch_id: str, reason: str) -> None:
        with self.db.session() as s, s.begin():
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.status == "in_progress")
                .values(pause_reason=f"Paused: {reason}"[:500])
            )

    # -- the end --------------------------------------------------------------------------------

    async def _expire(self, job: ClaimedJob) -> None:
        batch = await asyncio.to_thread(self._batch, job.ref)
        if batch is None or batch.status not in LIVE:
            return
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch.id, with_for_update=True)
            if row is None or row.status not in LIVE:
                return
            row.status, row.expired_at = "expiring", utcnow()
        self.queue.cancel(LINE, batch.id)
        self.queue.cancel(VALIDATE, batch.id)
        self._queue_finalize(batch.id, batch.account_id)
        self.runner.poke()

    def _queue_finalize(self, batch_id: str, account_id: str) -> None:
        self.queue.enqueue(
            FINALIZE, f"{FINALIZE}:{batch_id}", f"{batch_id}:final", account_id=account_id
        )

    async def _finalize(self, job: ClaimedJob) -> None:
        batch_id = job.ref.removesuffix(":final")
        batch = await asyncio.to_thread(self._batch, batch_id)
        if batch is None or batch.status in ENDED:
            return
        # Lines still running (cancel, expiry) finish first: their outputs are written too.
        running = await asyncio.to_thread(self.queue.counts, batch_id)
        if running.get("running", 0):
            raise RetryLater(timedelta(seconds=0.5), "lines still running")
        await asyncio.to_thread(self._write_outputs, batch)
        self.runner.poke()

    def _write_outputs(self, batch: Batch) -> None:
        final = {"in_progress": "completed", "cancelling": "cancelled", "expiring": "expired"}
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch.id, with_for_update=True)
            if row is None or row.status not in (*final, "finalizing"):
                return
            ending = final.get(row.status, row.final_status or "completed")
            row.final_status = ending
            row.status, row.finalizing_at = "finalizing", row.finalizing_at or utcnow()
        sealer = self.blobs.record_sealer(batch.id, batch.line_key) if batch.line_key else None
        expires = batch.output_expires_s
        output = self.files.create_output(
            batch.account_id,
            batch.id,
            "output",
            f"{batch.id}_output.jsonl",
            expires_after_s=expires,
        )
        errors = self.files.create_output(
            batch.account_id,
            batch.id,
            "error",
            f"{batch.id}_error.jsonl",
            expires_after_s=expires,
        )
        expired = 0
        with output, errors:
            with self.db.session() as s:
                rows = s.execute(
                    select(
                        BatchLine.number,
                        BatchLine.custom_id,
                        BatchLine.state,
                        BatchLine.result,
                        BatchLine.ok,
                    )
                    .where(BatchLine.batch_id == batch.id)
                    .order_by(BatchLine.number)
                    .execution_options(yield_per=INSERT_CHUNK)
                )
                for number, custom_id, state, result, ok in rows:
                    if state == "done" and result is not None and sealer is not None:
                        data = sealer.open(f"{batch.id}:{number}:output", result)
                        (output if ok else errors).write(data + b"\n")
                    elif ending == "expired":
                        expired += 1
                        errors.write(_expired_line(custom_id) + b"\n")
            out_row = output.finish() if output.size else None
            err_row = errors.finish() if errors.size else None
        now = utcnow()
        with self.db.session() as s, s.begin():
            row = s.get(Batch, batch.id, with_for_update=True)
            assert row is not None
            row.output_file_id = out_row.id if out_row else None
            row.error_file_id = err_row.id if err_row else None
            row.failed += expired
            row.status, row.line_key = ending, None
            setattr(row, f"{ending}_at", now)
            s.execute(delete(BatchLine).where(BatchLine.batch_id == batch.id))
        self.files.purge(batch.input_file_id)
        log.info("batch ended", extra={"status": ending})

    # -- rows -----------------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> Batch | None:
        with self.db.session() as s:
            return s.get(Batch, batch_id)

    def _line_row(self, batch_id: str, number: int) -> BatchLine | None:
        with self.db.session() as s:
            return s.get(BatchLine, (batch_id, number))


def _error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


def _expired_line(custom_id: str) -> bytes:
    return json.dumps(
        {
            "id": "batch_req_" + secrets.token_hex(12),
            "custom_id": custom_id,
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window "
                "expired.",
            },
        }
    ).encode()
