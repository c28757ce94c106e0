"""An account's webhook secret is created once, however many deliveries ask for it at the same
moment (they run in parallel, in several gateways), and rotation keeps the old one signing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferd.auth.accounts import AccountService
from inferd.auth.keys import KeyVault
from inferd.jobs.webhooks.secrets import WebhookSecrets
from inferd.store.db import Database
from tests.pg_schema import own_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'inferd.db'}")
        database.migrate()
        yield database
        database.close()
        return
    with own_schema("inferd_secrets_test") as url:
        database = Database(url)
        database.migrate()
        yield database
        database.close()


def test_created_once_under_concurrency_and_rotated(db: Database) -> None:
    vault = KeyVault(b"m" * 32)
    account = AccountService(db, vault).create_account("hooks")
    # Separate Database objects: separate connection pools, like separate gateways.
    services = [WebhookSecrets(Database(db.url), vault, 3600) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda svc: svc.signing(account.id), services * 4))
    assert len({tuple(s) for s in seen}) == 1 and seen[0][0].startswith("whsec_")
    fresh = services[0].rotate(account.id)
    assert services[1].signing(account.id) == [fresh, seen[0][0]]
    for svc in services:
        svc.db.close()
