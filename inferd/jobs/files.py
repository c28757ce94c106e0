"""Files of the Files and Batch APIs: uploads, batch outputs, reads and retention.

Content lives only in the encrypted blob store (store/blobs.py), one data key per file, wrapped
in the file's `batch_files` row. Nothing here holds a file whole: an upload is encrypted chunk by
chunk as the HTTP layer receives it (`Upload` is the sink it streams into), a batch output is
written line by line (`OutputWriter`), and a read yields decrypted chunks (`open`).

Retention: every file's row is written in one transaction with a `files.purge` job due at its
`expires_at` (an unused upload: 24 h or its `expires_after`; a batch's output and error files:
30 days or the batch's `output_expires_after`). A purge destroys the wrapped key and the
ciphertext and records `purged_at`; the row stays, metadata only. An input file attached to a
batch is left to that batch, which purges it when it ends (`purge`). `delete` purges at once.

Methods are synchronous (database and file IO); async callers use `asyncio.to_thread`, except
for the per-chunk `Upload.write`, which is cheap enough to call inline. Nothing here logs
content or filenames.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Literal

from sqlalchemy import ColumnElement, Select, and_, or_, select

from inferd.jobs.queue import ClaimedJob, JobQueue
from inferd.jobs.runner import JobRunner
from inferd.store.batch_tables import ERROR, INPUT, OUTPUT, BatchFile
from inferd.store.blobs import BlobMissing, BlobStore, BlobWriter
from inferd.store.db import Database
from inferd.store.jobs_tables import Job
from inferd.store.models import as_utc, utcnow

PURGE = "files.purge"
PURGE_PRIORITY = 1000  # retention runs after work that someone waits on
UPLOAD_PURPOSES = ("batch",)  # what a client may upload
OUTPUT_PURPOSE = "batch_output"  # OpenAI's purpose for a batch's output and error files
MAX_FILENAME = 512
MAX_LIST = 10_000  # OpenAI's most (and default) files per list page

Order = Literal["asc", "desc"]


class FileError(Exception):
    """A refusal the HTTP layer renders as a 4xx; messages never quote content."""


class FileNotFound(FileError):
    """No such file for this account, or its content was deleted or purged."""


class FileTooLarge(FileError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The file exceeds {limit} bytes.")
        self.limit = limit


class FileInvalid(FileError):
    """The upload is unusable (empty, a name too long, an unknown purpose)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class FileInUse(FileError):
    """The file is attached to another batch already."""


class CursorUnknown(FileError):
    """`after` names no file of this account."""


def new_file_id() -> str:
    # A valid blob id too (store/blobs.py: [A-Za-z0-9][A-Za-z0-9_-]{0,127}).
    return "file-" + secrets.token_hex(12)


def _live(query: Select[tuple[BatchFile]]) -> Select[tuple[BatchFile]]:
    return query.where(BatchFile.deleted_at.is_(None), BatchFile.purged_at.is_(None))


class FileStore:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        queue: JobQueue,
        *,
        upload_max_bytes: int = 200 * 1024 * 1024,
        unused_expiry_s: float = 86400,
        output_expiry_s: float = 30 * 86400,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.queue = queue
        self.upload_max_bytes = upload_max_bytes
        self.unused_expiry = timedelta(seconds=unused_expiry_s)
        self.output_expiry = timedelta(seconds=output_expiry_s)

    def serve(self, runner: JobRunner, concurrency: int = 2) -> None:
        """Register the `files.purge` handler (before `runner.start()`)."""
        runner.handle(PURGE, self._purge_job, concurrency=concurrency)

    # -- writing --------------------------------------------------------------------------------

    def upload(self, account_id: str) -> Upload:
        """A new upload for `account_id`: stream the content into `Upload.write` (after
        `Upload.start`), then `Upload.finish`. Use as a context manager: an upload left
        unfinished is aborted and leaves nothing behind."""
        return Upload(self, account_id)

    def create_output(
        self,
        account_id: str,
        batch_id: str,
        role: Literal["output", "error"],
        filename: str,
        *,
        expires_after_s: float | None = None,
    ) -> OutputWriter:
        """A writer for a batch's output or error file (purpose `batch_output`): `write` the
        JSONL lines, then `finish()` → the file's row. Expires `expires_after_s` (the batch's
        `output_expires_after`) or 30 days after it is finished."""
        if role not in (OUTPUT, ERROR):
            raise ValueError(f"An output file's role is {OUTPUT} or {ERROR}, not {role}.")
        expiry = (
            timedelta(seconds=expires_after_s)
            if expires_after_s is not None
            else self.output_expiry
        )
        return OutputWriter(self, account_id, batch_id, role, filename, expiry)

    def _commit(
        self,
        file_id: str,
        writer: BlobWriter,
        *,
        account_id: str,
        filename: str,
        purpose: str,
        expiry: timedelta,
        batch_id: str | None = None,
        role: str | None = None,
    ) -> BatchFile:
        """Seal the blob, then write its row and its purge job in one transaction: a row
        never exists without the job that ends it, and a failure leaves no ciphertext."""
        sealed = writer.finish()
        now = utcnow()
        row = BatchFile(
            id=file_id,
            account_id=account_id,
            filename=filename,
            purpose=purpose,
            bytes=sealed.size,
            wrapped_key=sealed.wrapped_key,
            created_at=now,
            expires_at=now + expiry,
            batch_id=batch_id,
            role=role,
        )
        try:
            with self.db.session() as s, s.begin():
                s.add(row)
                # The queue's own row, written in this transaction (JobQueue.enqueue commits
                # on its own); the id is fresh, so its key cannot exist yet.
                s.add(
                    Job(
                        kind=PURGE,
                        key=f"{PURGE}:{file_id}",
                        ref=file_id,
                        account_id=account_id,
                        priority=PURGE_PRIORITY,
                        run_at=now + expiry,
                    )
                )
        except BaseException:
            self.blobs.purge(file_id)
            raise
        return row

    # -- reading --------------------------------------------------------------------------------

    def get(self, account_id: str, file_id: str) -> BatchFile | None:
        """The account's file, if its content still exists (not deleted, not purged)."""
        with self.db.session() as s:
            row = s.get(BatchFile, file_id)
        if row is None or row.account_id != account_id:
            return None
        if row.deleted_at is not None or row.purged_at is not None:
            return None
        return row

    def record(self, file_id: str) -> BatchFile | None:
        """The row whatever its state (for the batch code and the record of purges)."""
        with self.db.session() as s:
            return s.get(BatchFile, file_id)

    def list(
        self,
        account_id: str,
        *,
        after: str | None = None,
        limit: int = MAX_LIST,
        order: Order = "desc",
        purpose: str | None = None,
    ) -> tuple[list[BatchFile], bool]:
        """One page of the account's live files by `created_at` (`order`), starting after the
        file `after`; returns (files, has_more). `CursorUnknown` when `after` is not one of
        the account's files (a deleted or purged one still works as a cursor)."""
        limit = max(1, min(limit, MAX_LIST))
        with self.db.session() as s:
            query = _live(select(BatchFile).where(BatchFile.account_id == account_id))
            if purpose is not None:
                query = query.where(BatchFile.purpose == purpose)
            if after is not None:
                cursor = s.get(BatchFile, after)
                if cursor is None or cursor.account_id != account_id:
                    raise CursorUnknown(f"`after`: no file `{after}` in this account.")
                query = query.where(_beyond(cursor, order))
            if order == "asc":
                query = query.order_by(BatchFile.created_at.asc(), BatchFile.id.asc())
            else:
                query = query.order_by(BatchFile.created_at.desc(), BatchFile.id.desc())
            rows = list(s.scalars(query.limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def open(self, account_id: str, file_id: str) -> tuple[BatchFile, Iterator[bytes]]:
        """The file's row and its plaintext, chunk by chunk (never joined); `FileNotFound`
        when the account has no such file or its content is gone. Close the iterator when
        stopping early (it holds the ciphertext open)."""
        row = self.get(account_id, file_id)
        if row is None or row.wrapped_key is None:
            raise FileNotFound(f"No file `{file_id}`.")
        try:
            return row, self.blobs.read(file_id, row.wrapped_key)
        except BlobMissing:
            raise FileNotFound(f"No file `{file_id}`.") from None

    # -- batches --------------------------------------------------------------------------------

    def attach(self, account_id: str, file_id: str, batch_id: str) -> BatchFile:
        """Make the account's live `batch` file the input of `batch_id`: from now on it is
        purged when that batch ends (`purge`), not at its `expires_at`. Under the row's lock,
        so a purge at expiry either comes first (`FileNotFound`) or sees the batch.
        `FileInUse` when another batch has it (its end would purge it under this one)."""
        with self.db.session() as s, s.begin():
            row = s.get(BatchFile, file_id, with_for_update=True)
            if (
                row is None
                or row.account_id != account_id
                or row.deleted_at is not None
                or row.purged_at is not None
            ):
                raise FileNotFound(f"No file `{file_id}`.")
            if row.batch_id is not None and row.batch_id != batch_id:
                raise FileInUse(f"File `{file_id}` is the input of another batch.")
            row.batch_id, row.role = batch_id, INPUT
        return row

    # -- retention ------------------------------------------------------------------------------

    def delete(self, account_id: str, file_id: str) -> bool:
        """Delete the account's file now: its key and ciphertext are destroyed, the row kept
        with `deleted_at`. False when there is no such live file."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            row = s.get(BatchFile, file_id, with_for_update=True)
            if row is None or row.account_id != account_id or row.deleted_at is not None:
                return False
            if row.purged_at is not None:
                return False
            row.deleted_at = row.purged_at = now
            row.wrapped_key = None
        self.blobs.purge(file_id)
        return True

    def purge(self, file_id: str) -> bool:
        """Destroy the file's key and ciphertext now and record it (a batch's input when the
        batch ends). Idempotent; True when this call purged it."""
        purged = self._destroy_key(file_id, lambda _row: True)
        # Even when the row was purged before: a crash between that commit and the unlink
        # would have left the ciphertext (unreadable without its key, but still there).
        self.blobs.purge(file_id)
        return purged

    async def _purge_job(self, job: ClaimedJob) -> None:
        await asyncio.to_thread(self._expire, job.ref)

    def _expire(self, file_id: str) -> None:
        now = utcnow()

        def due(row: BatchFile) -> bool:
            if row.role == INPUT and row.batch_id is not None:
                return False  # its batch purges it when it ends
            return row.expires_at is not None and as_utc(row.expires_at) <= now

        if self._destroy_key(file_id, due) is None:
            return  # not due: nothing to unlink
        self.blobs.purge(file_id)

    def _destroy_key(self, file_id: str, due: Callable[[BatchFile], bool]) -> bool | None:
        """True: purged now; False: already purged (or no row); None: kept (`due` said no)."""
        with self.db.session() as s, s.begin():
            row = s.get(BatchFile, file_id, with_for_update=True)
            if row is None or row.purged_at is not None:
                return False
            if not due(row):
                return None
            row.wrapped_key = None
            row.purged_at = utcnow()
        return True


def _beyond(cursor: BatchFile, order: Order) -> ColumnElement[bool]:
    """Rows after `cursor` in this order: (created_at, id) strictly beyond the cursor's."""
    at, key = cursor.created_at, cursor.id
    if order == "asc":
        return or_(BatchFile.created_at > at, and_(BatchFile.created_at == at, BatchFile.id > key))
    return or_(BatchFile.created_at < at, and_(BatchFile.created_at == at, BatchFile.id < key))


class Upload:
    """One client upload, streamed: `start(filename)` once the file part begins, `write` each
    received slice (encrypted as it comes; never held whole), then `finish(purpose, ...)`
    after the whole form was read. `abort` (or leaving the `with` block unfinished) drops
    the ciphertext; the row is only written by `finish`."""

    def __init__(self, store: FileStore, account_id: str) -> None:
        self.store = store
        self.account_id = account_id
        self.file_id = new_file_id()
        self.filename: str | None = None
        self.size = 0
        self._writer: BlobWriter | None = None
        self._done = False

    def start(self, filename: str | None) -> Upload:
        """Begin the content; returns the sink (this upload) for the streaming reader."""
        if self._writer is not None:
            raise FileInvalid("Send one file per upload.", "file")
        name = filename or "file"
        if len(name) > MAX_FILENAME:
            raise FileInvalid(f"The filename exceeds {MAX_FILENAME} characters.", "file")
        if "\x00" in name:  # stored as text: PostgreSQL's cannot hold NUL
            raise FileInvalid("The filename must not contain NUL characters.", "file")
        self.filename = name
        self._writer = self.store.blobs.writer(self.file_id)
        return self

    @property
    def started(self) -> bool:
        return self._writer is not None

    def write(self, data: bytes) -> None:
        assert self._writer is not None, "start() first"
        self.size += len(data)
        if self.size > self.store.upload_max_bytes:
            raise FileTooLarge(self.store.upload_max_bytes)
        self._writer.write(data)

    def abort(self) -> None:
        # Not once `finish` began: it may be running in a thread while a cancelled request
        # unwinds, and it cleans up after itself if it fails.
        if self._writer is not None and not self._done:
            self._writer.abort()

    def finish(self, purpose: str, expires_after_s: float | None = None) -> BatchFile:
        """Seal the content and record the file; it expires `expires_after_s` (the client's
        `expires_after`) or `unused_expiry_s` after now unless a batch takes it first."""
        if self._writer is None:
            raise FileInvalid("The form has no `file` part.", "file")
        if purpose not in UPLOAD_PURPOSES:
            raise FileInvalid(f"`purpose` must be one of: {', '.join(UPLOAD_PURPOSES)}.", "purpose")
        if self.size == 0:
            raise FileInvalid("The file is empty.", "file")
        self._done = True  # from here on `_commit` cleans up after a failure itself
        expiry = (
            timedelta(seconds=expires_after_s)
            if expires_after_s is not None
            else self.store.unused_expiry
        )
        return self.store._commit(
            self.file_id,
            self._writer,
            account_id=self.account_id,
            filename=self.filename or "file",
            purpose=purpose,
            expiry=expiry,
        )

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op once finished


class OutputWriter:
    """A batch's output or error file, written line by line (`write`), then `finish()`.
    `abort` (or leaving the `with` block unfinished) drops it."""

    def __init__(
        self,
        store: FileStore,
        account_id: str,
        batch_id: str,
        role: str,
        filename: str,
        expiry: timedelta,
    ) -> None:
        self.store = store
        self.account_id = account_id
        self.batch_id = batch_id
        self.role = role
        self.filename = filename[:MAX_FILENAME]
        self.expiry = expiry
        self.file_id = new_file_id()
        self._writer = store.blobs.writer(self.file_id)
        self._done = False

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes) -> None:
        """Append bytes (e.g. one JSON line with its `\\n`); encrypted a chunk at a time."""
        self._writer.write(data)

    def finish(self) -> BatchFile:
        self._done = True  # from here on `_commit` cleans up after a failure itself
        return self.store._commit(
            self.file_id,
            self._writer,
            account_id=self.account_id,
            filename=self.filename,
            purpose=OUTPUT_PURPOSE,
            expiry=self.expiry,
            batch_id=self.batch_id,
            role=self.role,
        )

    def abort(self) -> None:
        if not self._done:
            self._writer.abort()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


def lines(chunks: Iterator[bytes], max_line_bytes: int = 16 * 1024 * 1024) -> Iterator[bytes]:
    """The lines of a file read with `FileStore.open` (without their `\\n`), holding one line
    and one chunk at most; a line over `max_line_bytes` raises `FileInvalid`. For the batch
    code's reading of a JSONL input."""
    pending = bytearray()
    try:
        for chunk in chunks:
            start = 0
            while (end := chunk.find(b"\n", start)) != -1:
                pending += chunk[start:end]
                yield bytes(pending)
                pending.clear()
                start = end + 1
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                raise FileInvalid(f"A line exceeds {max_line_bytes} bytes.", "input_file_id")
        if pending:
            yield bytes(pending)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


__all__ = [
    "OUTPUT_PURPOSE",
    "PURGE",
    "UPLOAD_PURPOSES",
    "CursorUnknown",
    "FileError",
    "FileInUse",
    "FileInvalid",
    "FileNotFound",
    "FileStore",
    "FileTooLarge",
    "OutputWriter",
    "Upload",
    "lines",
]
