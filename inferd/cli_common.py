"""What the operator's commands that work on the server's database share."""

from __future__ import annotations

from inferd.auth.accounts import AccountService
from inferd.config import Settings
from inferd.store.db import Database


def database(settings: Settings) -> Database:
    """The server's database, migrated to this version's schema."""
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    return db


def account_services(settings: Settings) -> AccountService:
    from inferd.auth.keys import KeyVault, load_or_create_secret

    db = database(settings)
    return AccountService(db, KeyVault(load_or_create_secret(settings.home, settings.master_key)))
