"""Tells the recent users of a deprecated model, by email, before its date.

Every `deprecation_check_interval_s`, for each deprecated built-in model whose date is at most
`deprecation_notice_days` ahead (or already past), the accounts with a contact email that used
the model in the last 30 days get one plain-text email through the operator's SMTP server.

Each notice is claimed in the database (`deprecation_notices`, unique per model and account)
before it is sent, so two gateways, or a restart, never send it twice; a send that fails gives
its claim back and is tried again next round. The email names the model, its date and its
replacement, and nothing a request held. Database and SMTP calls block: they run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from inferd.catalog import Catalog, ModelSpec
from inferd.config import Settings
from inferd.store.db import Database
from inferd.store.models import Account, DeprecationNotice, Usage

log = logging.getLogger("inferd.control")

RECENT = timedelta(days=30)  # who counts as a user of the model
SMTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Recipient:
    account_id: str
    account_name: str
    email: str


class DeprecationNotifier:
    def __init__(self, settings: Settings, db: Database, catalog: Catalog) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.catalog.deprecated():
            return
        if not self.settings.smtp_host:
            log.warning("deprecation notices are off: smtp_host is not set")
            return
        self._task = asyncio.create_task(self._run(), name="deprecation-notices")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.notify()
            except Exception as exc:  # the database may be briefly away: try next round
                log.error("deprecation notices failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self.settings.deprecation_check_interval_s)

    async def notify(self, now: datetime | None = None) -> int:
        """One round; returns how many emails were sent."""
        now = now or datetime.now(UTC)
        ahead = timedelta(days=self.settings.deprecation_notice_days)
        sent = 0
        for spec in self.catalog.deprecated():
            assert spec.deprecated_at is not None
            if now < spec.deprecated_at - ahead:
                continue
            recipients = await asyncio.to_thread(self._recipients, spec.name, now - RECENT)
            if recipients:
                sent += await asyncio.to_thread(self._deliver, spec, recipients, now)
        return sent

    def _recipients(self, model: str, since: datetime) -> list[Recipient]:
        """Accounts with an email that used `model` since `since` and were not told yet."""
        used = select(Usage.account_id).where(Usage.model == model, Usage.started_at >= since)
        told = select(DeprecationNotice.account_id).where(DeprecationNotice.model == model)
        query = (
            select(Account.id, Account.name, Account.email)
            .where(Account.email.is_not(None), Account.id.in_(used), Account.id.not_in(told))
            .order_by(Account.id)
        )
        with self.db.session() as s:
            return [Recipient(r.id, r.name, r.email) for r in s.execute(query)]

    def _deliver(self, spec: ModelSpec, recipients: list[Recipient], now: datetime) -> int:
        """Claim and send each notice over one connection. A recipient the server refuses is
        retried next round; any other failure ends this round (the server is likely away)."""
        sent = 0
        with contextlib.ExitStack() as stack:
            smtp: smtplib.SMTP | None = None
            for recipient in recipients:
                if not self._claim(spec.name, recipient.account_id, now):
                    continue  # another gateway got there first
                fields = {"model": spec.name, "account": recipient.account_id}
                try:
                    if smtp is None:
                        smtp = stack.enter_context(self._connect())
                    smtp.send_message(notice(self.settings.smtp_from, spec, recipient, now))
                except smtplib.SMTPRecipientsRefused:
                    self._release(spec.name, recipient.account_id)
                    log.warning("deprecation notice refused", extra=fields)
                    continue
                except (OSError, smtplib.SMTPException) as exc:
                    self._release(spec.name, recipient.account_id)
                    log.warning(
                        "deprecation notice not sent", extra={**fields, "error": type(exc).__name__}
                    )
                    break
                sent += 1
                log.info("deprecation notice sent", extra=fields)
        return sent

    def _claim(self, model: str, account_id: str, now: datetime) -> bool:
        try:
            with self.db.session() as s, s.begin():
                s.add(DeprecationNotice(model=model, account_id=account_id, sent_at=now))
        except IntegrityError:
            return False
        return True

    def _release(self, model: str, account_id: str) -> None:
        with self.db.session() as s, s.begin():
            s.execute(
                delete(DeprecationNotice).where(
                    DeprecationNotice.model == model, DeprecationNotice.account_id == account_id
                )
            )

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        assert settings.smtp_host is not None
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S)
        try:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password
                smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def notice(sender: str, spec: ModelSpec, recipient: Recipient, now: datetime) -> EmailMessage:
    """The email: the model, its date and its replacement; never anything a request held."""
    assert spec.deprecated_at is not None
    when = spec.deprecated_at.strftime("%Y-%m-%d %H:%M UTC")
    model, replacement = spec.name, spec.replacement
    past = now >= spec.deprecated_at
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient.email
    message["Subject"] = f"Model {model} is deprecated on {when}: {replacement} replaces it"
    message["Date"] = format_datetime(now)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid("deprecation", domain=domain)
    message.set_content(
        f"Hello {recipient.account_name},\n\n"
        f"your account used the model {model} in the last 30 days.\n\n"
        f"{'Since' if past else 'From'} {when}, {model} is deprecated: every request for it "
        f"{'is' if past else 'will be'} served by {replacement}. Your requests keep working, "
        f"and their responses name the model that served in the header "
        f"X-Inferd-Served-By.\n\n"
        f"To choose the model that serves you, send `{replacement}` (or another model) "
        f"instead of `{model}`. Until the date, responses for {model} carry the "
        f"Deprecation and Sunset headers.\n"
    )
    return message
