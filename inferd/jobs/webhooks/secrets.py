"""Each account's webhook signing secret (`whsec_...`), encrypted under the master key.

Created on first use. A rotation keeps the old secret signing beside the new one for a window,
so receivers can switch over without dropping a delivery. Synchronous (callers on the event loop
use `asyncio.to_thread`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from inferd.auth.keys import KeyVault
from inferd.jobs.webhooks.signing import new_secret
from inferd.store.db import Database
from inferd.store.models import as_utc
from inferd.store.webhook_tables import WebhookSecret


class WebhookSecrets:
    def __init__(self, db: Database, vault: KeyVault, rotation_window_s: float) -> None:
        self.db = db
        self.vault = vault
        self.rotation_window = timedelta(seconds=rotation_window_s)

    def current(self, account_id: str) -> str:
        """The account's secret, created if it has none."""
        return self.signing(account_id)[0]

    def signing(self, account_id: str) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one while
        its rotation window lasts."""
        self._ensure(account_id)
        with self.db.session() as s:
            row = s.get(WebhookSecret, account_id)
            assert row is not None
            secrets = [self.vault.decrypt(row.secret)]
            until = row.previous_until
            if row.previous and until is not None and as_utc(until) > datetime.now(UTC):
                secrets.append(self.vault.decrypt(row.previous))
            return secrets

    def _ensure(self, account_id: str) -> None:
        """Create the account's secret if it has none. Deliveries of one account run in
        parallel (and in several gateways): the first insert wins, the others find it."""
        with self.db.session() as s:
            if s.get(WebhookSecret, account_id) is not None:
                return
        row = WebhookSecret(
            account_id=account_id,
            secret=self.vault.encrypt(new_secret()),
            rotated_at=datetime.now(UTC),
        )
        try:
            with self.db.session() as s, s.begin():
                s.add(row)
        except IntegrityError:
            pass  # created meanwhile by another delivery

    def rotate(self, account_id: str) -> str:
        """A new secret; the old one keeps signing for the rotation window."""
        self.current(account_id)  # there is one to rotate
        now = datetime.now(UTC)
        with self.db.session() as s, s.begin():
            row = s.get(WebhookSecret, account_id, with_for_update=True)
            assert row is not None
            fresh = new_secret()
            row.previous, row.previous_until = row.secret, now + self.rotation_window
            row.secret, row.rotated_at = self.vault.encrypt(fresh), now
            return fresh
