"""Accounts and their API keys (used by the HTTP API and the CLI)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from inferd.auth.keys import KeyVault, generate_key
from inferd.store.db import Database
from inferd.store.models import SYSTEM_ACCOUNT_ID, Account, ApiKey

ADMIN_ACCOUNT = "admin"
# Every account's first key; the seed page's scoped-JWT example signs with `api_key_name: "auto"`.
FIRST_KEY = "auto"


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
    alias_of: str | None = None  # set on an alias: the name of the key it stands for


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
        email: str | None = None,
        gpu_quota: int | None = None,
        zero_retention: bool = False,
    ) -> Account:
        account = Account(
            id="acc_" + secrets.token_hex(8),
            name=name,
            is_admin=is_admin,
            concurrency_limit=concurrency_limit,
            spending_limit=spending_limit,
            email=email,
            gpu_quota=gpu_quota,
            zero_retention=zero_retention,
        )
        try:
            with self.db.session() as s, s.begin():
                s.add(account)
        except IntegrityError as exc:
            raise Conflict(f"An account named `{name}` already exists.") from exc
        return account

    def list_accounts(self) -> list[Account]:
        with self.db.session() as s:
            query = select(Account).where(Account.id != SYSTEM_ACCOUNT_ID)
            return list(s.scalars(query.order_by(Account.created_at)))

    def get_account(self, name: str) -> Account | None:
        with self.db.session() as s:
            return s.scalar(select(Account).where(Account.name == name))

    def update_limits(self, name: str, limits: dict[str, int | float | None]) -> Account | None:
        """Set an account's `concurrency_limit`, `spending_limit` or `gpu_quota` (None: the
        server default / no limit); None if there is no such account. Gateways see a change
        once their credential cache expires (`auth_cache_ttl_s`)."""
        allowed = {"concurrency_limit", "spending_limit", "gpu_quota", "zero_retention"}
        if not set(limits) <= allowed:
            raise ValueError(f"only {sorted(allowed)} can change")
        with self.db.session() as s, s.begin():
            account = s.scalar(select(Account).where(Account.name == name))
            if account is not None:
                for field, value in limits.items():
                    if field == "zero_retention":
                        value = bool(value)  # null: off
                    setattr(account, field, value)
            return account

    def get_account_by_id(self, account_id: str) -> Account | None:
        with self.db.session() as s:
            return s.get(Account, account_id)

    def set_spending_limit(self, account_id: str, limit: float | None) -> Account | None:
        """A team admin's own limit (None: no limit); None if the account is gone."""
        with self.db.session() as s, s.begin():
            account = s.get(Account, account_id)
            if account is not None:
                account.spending_limit = limit
            return account

    def set_email(self, account_id: str, email: str | None) -> Account | None:
        """The account's contact email (None removes it); None if the account is gone."""
        with self.db.session() as s, s.begin():
            account = s.get(Account, account_id)
            if account is not None:
                account.email = email
            return account

    def create_key(
        self, account_id: str, name: str, key: str | None = None, user_id: str | None = None
    ) -> CreatedKey:
        """A new key; `user_id`: the user creating it (the key acts with their role)."""
        key = key or generate_key()
        row = ApiKey(
            account_id=account_id,
            user_id=user_id,
            name=name,
            key_hash=self.vault.digest(key),
            key_encrypted=self.vault.encrypt(key),
            prefix=key[:7],
        )
        conflict = Conflict(f"An API key named `{name}` already exists.")
        try:
            with self.db.session() as s, s.begin():
                # A name must not shadow an alias (`auto` of an upgraded account).
                if s.scalar(select(ApiKey.id).where(_named(account_id, name))) is not None:
                    raise conflict
                s.add(row)
        except IntegrityError as exc:
            raise conflict from exc
        return CreatedKey(account_id, name, key)

    def list_keys(self, account_id: str) -> list[KeyInfo]:
        """Keys by age; an alias is listed after its key, as its own entry with `alias_of`."""
        with self.db.session() as s:
            rows = s.scalars(
                select(ApiKey)
                .where(ApiKey.account_id == account_id)
                .order_by(ApiKey.created_at, ApiKey.id)
            )
            keys = []
            for r in rows:
                keys.append(KeyInfo(r.name, r.prefix, r.created_at))
                if r.alias:
                    keys.append(KeyInfo(r.alias, r.prefix, r.created_at, alias_of=r.name))
            return keys

    def delete_key(self, account_id: str, name: str) -> str | None:
        """Revokes a key (its alias goes with it) or only an alias.

        Returns the name of the key whose cached credentials must be evicted (credentials
        verified through an alias are cached under the key's own name), or None if no key or
        alias has that name.
        """
        with self.db.session() as s, s.begin():
            result = s.execute(
                delete(ApiKey).where(ApiKey.account_id == account_id, ApiKey.name == name)
            )
            if result.rowcount:
                return name
            key_name = s.scalar(
                select(ApiKey.name).where(ApiKey.account_id == account_id, ApiKey.alias == name)
            )
            if key_name is not None:
                s.execute(
                    update(ApiKey)
                    .where(ApiKey.account_id == account_id, ApiKey.alias == name)
                    .values(alias=None)
                )
            return key_name

    def signing_key(self, account_id: str, name: str) -> tuple[str, str] | None:
        """The key named (or aliased) `name`: its own name and its plaintext, with which scoped
        JWTs are signed (decrypted in memory only)."""
        with self.db.session() as s:
            # A real name wins over an alias; create_key keeps the two apart anyway.
            row = s.execute(
                select(ApiKey.name, ApiKey.key_encrypted)
                .where(_named(account_id, name))
                .order_by((ApiKey.name == name).desc())
                .limit(1)
            ).first()
        return None if row is None else (row.name, self.vault.decrypt(row.key_encrypted))

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
            if self.has_key(admin_key):
                return None
            # The given key is the admin's `auto` key, unless `auto` already exists (the
            # variable was changed): then it is added beside it, never replacing it.
            name = FIRST_KEY if self.signing_key(account.id, FIRST_KEY) is None else None
            try:
                return self.create_key(account.id, name or f"env-{secrets.token_hex(3)}", admin_key)
            except Conflict:  # another gateway process won the race
                return None
        if not self.list_keys(account.id):
            try:
                return self.create_key(account.id, FIRST_KEY)
            except Conflict:
                return None
        return None


def _named(account_id: str, name: str) -> ColumnElement[bool]:
    """The account's key with this name or alias."""
    return (ApiKey.account_id == account_id) & or_(ApiKey.name == name, ApiKey.alias == name)
