"""Accounts and their API keys (used by the HTTP API and the CLI)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from inferd.auth.keys import KeyVault, generate_key
from inferd.store.db import Database
from inferd.store.models import Account, ApiKey

ADMIN_ACCOUNT = "admin"


class Conflict(Exception):
    pass


@dataclass
class CreatedKey:
    account_id: str
    name: str
    key: str  # shown once; stored only as a keyed hash and encrypted


@dataclass
class KeyInfo:
    name: str
    prefix: str
    created_at: datetime


class AccountService:
    def __init__(self, db: Database, vault: KeyVault) -> None:
        self.db = db
        self.vault = vault

    def create_account(
        self,
        name: str,
        *,
        is_admin: bool = False,
        concurrency_limit: int | None = None,
        spending_limit: float | None = None,
    ) -> Account:
        account = Account(
            id="acc_" + secrets.token_hex(8),
            name=name,
            is_admin=is_admin,
            concurrency_limit=concurrency_limit,
            spending_limit=spending_limit,
        )
        try:
            with self.db.session() as s, s.begin():
                s.add(account)
        except IntegrityError as exc:
            raise Conflict(f"An account named `{name}` already exists.") from exc
        return account

    def list_accounts(self) -> list[Account]:
        with self.db.session() as s:
            return list(s.scalars(select(Account).order_by(Account.created_at)))

    def get_account(self, name: str) -> Account | None:
        with self.db.session() as s:
            return s.scalar(select(Account).where(Account.name == name))

    def create_key(self, account_id: str, name: str, key: str | None = None) -> CreatedKey:
        key = key or generate_key()
        row = ApiKey(
            account_id=account_id,
            name=name,
            key_hash=self.vault.digest(key),
            key_encrypted=self.vault.encrypt(key),
            prefix=key[:7],
        )
        try:
            with self.db.session() as s, s.begin():
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"An API key named `{name}` already exists.") from exc
        return CreatedKey(account_id, name, key)

    def list_keys(self, account_id: str) -> list[KeyInfo]:
        with self.db.session() as s:
            rows = s.scalars(
                select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
            )
            return [KeyInfo(r.name, r.prefix, r.created_at) for r in rows]

    def delete_key(self, account_id: str, name: str) -> bool:
        with self.db.session() as s, s.begin():
            result = s.execute(
                delete(ApiKey).where(ApiKey.account_id == account_id, ApiKey.name == name)
            )
            return bool(result.rowcount)

    def signing_key(self, account_id: str, name: str) -> str | None:
        """The plaintext key a scoped JWT is signed with (decrypted in memory only)."""
        with self.db.session() as s:
            row = s.scalar(
                select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.name == name)
            )
        return None if row is None else self.vault.decrypt(row.key_encrypted)

    def has_key(self, key: str) -> bool:
        with self.db.session() as s:
            digest = self.vault.digest(key)
            return s.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is not None

    def bootstrap_admin(self, admin_key: str | None) -> CreatedKey | None:
        """First start: create the admin account and a key. Returns the key if one was made."""
        account = self.get_account(ADMIN_ACCOUNT)
        if account is None:
            try:
                account = self.create_account(ADMIN_ACCOUNT, is_admin=True)
            except Conflict:  # another gateway process won the race
                account = self.get_account(ADMIN_ACCOUNT)
                assert account is not None
        if admin_key:
            if not self.has_key(admin_key):
                try:
                    return self.create_key(account.id, f"env-{secrets.token_hex(3)}", admin_key)
                except Conflict:
                    return None
            return None
        if not self.list_keys(account.id):
            return self.create_key(account.id, "default")
        return None
