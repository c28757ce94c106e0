"""Account and key management (used by the CLI and, later, the HTTP admin API)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from inferd.auth.keys import generate_key, key_hash
from inferd.store.db import Database
from inferd.store.models import Account, ApiKey

ADMIN_ACCOUNT = "admin"


@dataclass
class CreatedKey:
    account_id: str
    name: str
    key: str  # shown once, never stored


class AccountService:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self.secret = secret

    def create_account(self, name: str, *, is_admin: bool = False) -> Account:
        with self.db.session() as s, s.begin():
            account = Account(id="acc_" + secrets.token_hex(8), name=name, is_admin=is_admin)
            s.add(account)
        return account

    def get_account(self, name: str) -> Account | None:
        with self.db.session() as s:
            return s.scalar(select(Account).where(Account.name == name))

    def create_key(self, account_id: str, name: str, key: str | None = None) -> CreatedKey:
        key = key or generate_key()
        with self.db.session() as s, s.begin():
            s.add(
                ApiKey(
                    account_id=account_id,
                    name=name,
                    key_hash=key_hash(self.secret, key),
                    prefix=key[:7],
                )
            )
        return CreatedKey(account_id, name, key)

    def has_key(self, key: str) -> bool:
        with self.db.session() as s:
            digest = key_hash(self.secret, key)
            return s.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is not None

    def bootstrap_admin(self, admin_key: str | None) -> CreatedKey | None:
        """First start: create the admin account and a key. Returns the key if one was made."""
        account = self.get_account(ADMIN_ACCOUNT)
        if account is None:
            account = self.create_account(ADMIN_ACCOUNT, is_admin=True)
        if admin_key:
            if not self.has_key(admin_key):
                return self.create_key(account.id, f"env-{secrets.token_hex(3)}", admin_key)
            return None
        with self.db.session() as s:
            has_any = s.scalar(select(ApiKey.id).where(ApiKey.account_id == account.id))
        if has_any is None:
            return self.create_key(account.id, "default")
        return None
