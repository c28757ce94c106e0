"""Webhook requests, from submit to delivery, as durable jobs.

  submit     the request (its body and who sent it) goes into the encrypted store, a row and a
             `webhook.run` job into the database; the client gets `queued` at once.
  run        the job replays the request through the same code as an HTTP call (the caller's
             `execute`), stores the JSON body it answered, purges the request and queues
             `webhook.deliver`.
  deliver    POST the body, signed (Standard Webhooks) with the account's secrets and the same
             `webhook-id` on every attempt; a failed attempt is retried on the schedule, 410
             stops it. Either way `webhook.purge` destroys the payload when the resend window
             ends.

Every step checks the row's state first, so a job that runs twice (its process was killed
after the work and before the job was marked done) does nothing the second time. Nothing here
logs a URL or a body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from inferd.auth.keys import KeyVault
from inferd.jobs.queue import ClaimedJob, JobQueue
from inferd.jobs.runner import GiveUp, JobRunner, RetryLater
from inferd.jobs.webhooks import delivery
from inferd.jobs.webhooks.secrets import WebhookSecrets
from inferd.jobs.webhooks.signing import headers as signed_headers
from inferd.store.blobs import BlobError, BlobStore
from inferd.store.db import Database
from inferd.store.models import as_utc
from inferd.store.webhook_tables import WebhookDelivery

log = logging.getLogger("inferd.webhooks")

RUN, DELIVER, PURGE = "webhook.run", "webhook.deliver", "webhook.purge"
RUN_PRIORITY = 10  # a user waits on these; batch lines run after them


class QueueFull(Exception):
    pass


class ResendGone(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Envelope:
    """A webhook request as stored (encrypted): enough to replay it as its HTTP call."""

    request_id: str
    model: str
    content_type: str
    body: bytes
    principal: dict[str, Any]  # the caller, as authenticated at submit

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "request_id": self.request_id,
                "model": self.model,
                "content_type": self.content_type,
                "body": base64.b64encode(self.body).decode(),
                "principal": self.principal,
            }
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> Envelope:
        raw = json.loads(data)
        return cls(
            raw["request_id"],
            raw["model"],
            raw["content_type"],
            base64.b64decode(raw["body"]),
            raw["principal"],
        )


# Replays an envelope through the HTTP code path; returns the JSON body to deliver.
Execute = Callable[[Envelope], Awaitable[bytes]]


class Webhooks:
    def __init__(
        self,
        db: Database,
        vault: KeyVault,
        blobs: BlobStore,
        queue: JobQueue,
        runner: JobRunner,
        *,
        policy: delivery.DeliveryPolicy,
        retry: delivery.RetryPolicy,
        secrets_: WebhookSecrets,
        queue_limit: int,
        resend_window_s: float,
    ) -> None:
        self.db = db
        self.vault = vault
        self.blobs = blobs
        self.queue = queue
        self.runner = runner
        self.policy = policy
        self.retry = retry
        self.secrets = secrets_
        self.queue_limit = queue_limit
        self.resend_window = timedelta(seconds=resend_window_s)
        self._client = delivery.new_client()
        self._execute: Execute | None = None

    def serve(self, execute: Execute, concurrency: int = 4) -> None:
        """Register the job handlers; `execute` runs a request as the API would."""
        self._execute = execute
        # A run waits out a full concurrency limit in 2 s steps: allow hours of them.
        self.runner.handle(
            RUN, self._run, concurrency=concurrency, max_attempts=10_000, on_failed=self._run_failed
        )
        # Every scheduled retry is a claim of the job: room for all of them, and a few crashes.
        self.runner.handle(
            DELIVER,
            self._deliver,
            concurrency=8,
            max_attempts=len(self.retry.schedule) + 4,
            on_failed=self._deliver_failed,
        )
        self.runner.handle(PURGE, self._purge, concurrency=2)

    async def close(self) -> None:
        await self._client.aclose()

    # -- submit -------------------------------------------------------------------------------

    async def check_url(self, url: str) -> None:
        await delivery.check_url(url, self.policy)

    async def submit(self, account_id: str, url: str, envelope: Envelope) -> str:
        """Store the request and queue it; the delivery's id (`webhook-id`)."""
        delivery_id = "msg_" + secrets.token_hex(12)
        await asyncio.to_thread(self._store_request, account_id, url, envelope, delivery_id)
        self.runner.poke()
        return delivery_id

    def _store_request(
        self, account_id: str, url: str, envelope: Envelope, delivery_id: str
    ) -> None:
        with self.db.session() as s:
            waiting = s.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.account_id == account_id)
                .where(WebhookDelivery.state == "queued")
            )
        if (waiting or 0) >= self.queue_limit:
            raise QueueFull(
                f"This account has {waiting} webhook requests waiting to run (the most allowed)."
            )
        sealed = self._seal(f"{delivery_id}-request", envelope.dumps())
        try:
            with self.db.session() as s, s.begin():
                s.add(
                    WebhookDelivery(
                        id=delivery_id,
                        account_id=account_id,
                        request_id=envelope.request_id,
                        model=envelope.model,
                        url=self.vault.encrypt(url),
                        request_key=sealed,
                        state="queued",
                        attempts=0,
                    )
                )
        except Exception:
            self.blobs.purge(f"{delivery_id}-request")
            raise
        # A crash between the row and the job leaves a queued row: `recover` queues its job.
        self.queue.enqueue(
            RUN, f"{RUN}:{delivery_id}", delivery_id, account_id=account_id, priority=RUN_PRIORITY
        )

    def recover(self) -> int:
        """Queue the jobs of rows left without one (a crash between the two writes)."""
        queued = 0
        with self.db.session() as s:
            rows = s.execute(
                select(WebhookDelivery.id, WebhookDelivery.account_id, WebhookDelivery.state).where(
                    WebhookDelivery.state.in_(("queued", "pending"))
                )
            ).all()
        for delivery_id, account_id, state in rows:
            kind = RUN if state == "queued" else DELIVER
            queued += self.queue.enqueue(
                kind,
                f"{kind}:{delivery_id}",
                delivery_id,
                account_id=account_id,
                priority=RUN_PRIORITY,
            )
        return queued

    # -- jobs ---------------------------------------------------------------------------------

    async def _run(self, job: ClaimedJob) -> None:
        row = await asyncio.to_thread(self._row, job.ref)
        if row is None or row.state != "queued" or row.request_key is None:
            return  # done by an earlier run of this job
        assert self._execute is not None
        data = await asyncio.to_thread(self._open, f"{row.id}-request", row.request_key)
        result = await self._execute(Envelope.loads(data))
        await asyncio.to_thread(self._store_result, row.id, row.account_id, result)
        self.runner.poke()

    async def _run_failed(self, job: ClaimedJob) -> None:
        """The request could not be run (its stored copy unreadable, or every attempt
        crashed): the receiver is told, as a failed inference."""
        row = await asyncio.to_thread(self._row, job.ref)
        if row is None or row.state != "queued":
            return
        failure = {
            "request_id": row.request_id,
            "inference_status": {"status": "failed", "runtime_ms": 0, "cost": 0.0},
            "error": {"message": "The request could not be run.", "code": "internal_error"},
        }
        body = json.dumps(failure).encode()
        await asyncio.to_thread(self._store_result, row.id, row.account_id, body)
        self.runner.poke()

    async def _deliver_failed(self, job: ClaimedJob) -> None:
        """A delivery job that crashed every time: the row says failed, the purge is queued."""
        row = await asyncio.to_thread(self._row, job.ref)
        if row is None or row.state != "pending":
            return
        failed = delivery.AttemptResult(None, "internal_error", 0.0)
        await asyncio.to_thread(self._record, row.id, row.account_id, row.attempts, failed, None)

    def _store_result(self, delivery_id: str, account_id: str, result: bytes) -> None:
        sealed = self._seal(f"{delivery_id}-result", result)
        with self.db.session() as s, s.begin():
            row = s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None or row.state != "queued":
                self.blobs.purge(f"{delivery_id}-result")
                return
            row.result_key, row.request_key, row.state = sealed, None, "pending"
        self.blobs.purge(f"{delivery_id}-request")
        self.queue.enqueue(
            DELIVER,
            f"{DELIVER}:{delivery_id}",
            delivery_id,
            account_id=account_id,
            priority=RUN_PRIORITY,
        )

    async def _deliver(self, job: ClaimedJob) -> None:
        row = await asyncio.to_thread(self._row, job.ref)
        if row is None or row.state != "pending" or row.result_key is None:
            return
        body = await asyncio.to_thread(self._open, f"{row.id}-result", row.result_key)
        keys = await asyncio.to_thread(self.secrets.signing, row.account_id)
        # A fresh timestamp every attempt (receivers refuse old ones), the same id always.
        sent = signed_headers(row.id, int(time.time()), body, keys)
        sent["content-type"] = "application/json"
        url = self.vault.decrypt(row.url)
        result = await delivery.attempt(self._client, url, body, sent, self.policy)
        attempts = row.attempts + 1
        delay = None if result.delivered else self.retry.after(attempts, result)
        await asyncio.to_thread(self._record, row.id, row.account_id, attempts, result, delay)
        if delay is not None:
            raise RetryLater(timedelta(seconds=delay), f"status {result.status_code}")

    def _record(
        self,
        delivery_id: str,
        account_id: str,
        attempts: int,
        result: delivery.AttemptResult,
        delay: float | None,
    ) -> None:
        now = datetime.now(UTC)
        with self.db.session() as s, s.begin():
            row = s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None:
                return
            row.attempts = attempts
            row.last_status, row.last_error = result.status_code, result.error
            row.last_latency_ms = round(result.latency_ms)
            row.last_attempt_at = now
            if result.delivered:
                row.state, row.delivered_at, row.next_attempt_at = "delivered", now, None
            elif delay is None:
                row.state, row.next_attempt_at = "failed", None
            else:
                row.next_attempt_at = now + timedelta(seconds=delay)
                return
            row.purge_at = now + self.resend_window
            purge_at = row.purge_at
        self.queue.enqueue(
            PURGE,
            f"{PURGE}:{delivery_id}:{attempts}",
            delivery_id,
            account_id=account_id,
            priority=1000,
            run_at=purge_at,
        )
        log.info(
            "webhook delivered" if result.delivered else "webhook failed",
            extra={"status": result.status_code},
        )

    async def _purge(self, job: ClaimedJob) -> None:
        await asyncio.to_thread(self._purge_now, job.ref)

    def _purge_now(self, delivery_id: str) -> None:
        now = datetime.now(UTC)
        with self.db.session() as s, s.begin():
            row = s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None or row.purged_at is not None or row.purge_at is None:
                return
            if as_utc(row.purge_at) > now:
                return  # resent meanwhile: a later purge job holds the new date
            row.result_key = row.request_key = None
            row.purged_at = now
        self.blobs.purge(f"{delivery_id}-result")
        self.blobs.purge(f"{delivery_id}-request")

    # -- reads and resends ----------------------------------------------------------------------

    def list(self, account_id: str, limit: int = 100) -> list[WebhookDelivery]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.account_id == account_id)
                    .order_by(WebhookDelivery.created_at.desc())
                    .limit(limit)
                )
            )

    def resend(self, account_id: str, delivery_id: str) -> WebhookDelivery | None:
        """Deliver again (a new round of attempts, the same webhook-id); None: no such
        delivery; ResendGone once its payload was purged."""
        with self.db.session() as s, s.begin():
            row = s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None or row.account_id != account_id:
                return None
            if row.state in ("queued", "pending"):
                return row  # still on its way
            if row.purged_at is not None or row.result_key is None:
                raise ResendGone(
                    "This delivery's payload was deleted when its resend window ended "
                    f"({self.resend_window.total_seconds() / 3600:g} h after its last attempt)."
                )
            row.state, row.purge_at, row.next_attempt_at = "pending", None, None
            round_ = row.attempts
        self.queue.enqueue(
            DELIVER,
            f"{DELIVER}:{delivery_id}:resend{round_}",
            delivery_id,
            account_id=account_id,
            priority=RUN_PRIORITY,
        )
        self.runner.poke()
        return self._row(delivery_id)

    # -- helpers ------------------------------------------------------------------------------

    def _row(self, delivery_id: str) -> WebhookDelivery | None:
        with self.db.session() as s:
            return s.get(WebhookDelivery, delivery_id)

    def _seal(self, blob_id: str, data: bytes) -> str:
        self.blobs.purge(blob_id)  # a half-done earlier run's leftover
        with self.blobs.writer(blob_id) as writer:
            writer.write(data)
            return writer.finish().wrapped_key

    def _open(self, blob_id: str, wrapped_key: str) -> bytes:
        try:
            return b"".join(self.blobs.read(blob_id, wrapped_key))
        except BlobError as exc:
            raise GiveUp(f"payload unreadable: {type(exc).__name__}") from None
