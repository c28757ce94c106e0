"""Built-in models live in the database: a catalog file seeds them idempotently, and running
gateways follow a new seed without a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from inferd.auth.accounts import AccountService
from inferd.auth.keys import KeyVault
from inferd.catalog import Catalog
from inferd.control import builtins
from inferd.store.db import Database
from inferd.store.models import Deployment, DeploymentVersion
from tests.conftest import ADMIN_KEY, Server


def null_model(name: str, price: float = 0.0, extra: str = "") -> str:
    return (
        f'[[models]]\nname = "{name}"\ntask = "text-generation"\nengine = "null"\n'
        f"price = {{ input_per_1m = {price} }}\n{extra}\n"
    )


def versions(db: Database) -> dict[str, list[tuple[int, str]]]:
    """Each built-in's versions: (version, desired), oldest first."""
    with db.session() as s:
        rows = s.execute(
            select(Deployment.full_name, DeploymentVersion.version, DeploymentVersion.desired)
            .join(Deployment, Deployment.id == DeploymentVersion.deployment_id)
            .where(Deployment.kind == "builtin")
            .order_by(DeploymentVersion.version)
        )
        found: dict[str, list[tuple[int, str]]] = {}
        for name, version, desired in rows:
            found.setdefault(name, []).append((version, desired))
        return found


def test_seed_writes_changes_only_and_versions_them(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'inferd.db'}")
    db.migrate()
    first = Catalog.from_toml(null_model("t/a", 0.1) + null_model("t/b"))
    assert builtins.seed(db, first) is True
    assert builtins.seed(db, first) is False  # the same file again writes nothing
    assert versions(db) == {"t/a": [(1, "running")], "t/b": [(1, "running")]}

    # t/a's price changes, t/b goes, t/c comes.
    second = Catalog.from_toml(null_model("t/a", 0.2) + null_model("t/c"))
    assert builtins.seed(db, second) is True
    assert versions(db) == {
        "t/a": [(1, "deleted"), (2, "running")],
        "t/b": [(1, "deleted")],
        "t/c": [(1, "running")],
    }
    loaded = builtins.load(db)
    assert [s.name for s in loaded] == ["t/a", "t/c"]
    assert loaded[0].price.input_per_1m == 0.2
    assert builtins.load(db) == list(second)  # what was declared, field for field

    # Seeding the first file again brings t/b back as a new version.
    assert builtins.seed(db, first) is True
    assert versions(db)["t/b"] == [(1, "deleted"), (2, "running")]
    assert versions(db)["t/a"][-1] == (3, "running")

    # The system account owning them is nobody's to list or log in as.
    accounts = AccountService(db, KeyVault(b"k" * 32))
    assert all(a.name != "inferd:builtin" for a in accounts.list_accounts())
    db.close()


def seed(server: Server, catalog: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "inferd", "models", "seed", str(catalog)],
        env=server.env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def model_ids(server: Server) -> set[str]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    listed = httpx.get(server.url + "/v1/openai/models", headers=headers, timeout=10)
    return {m["id"] for m in listed.json()["data"]}


def chat(server: Server, model: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/openai/chat/completions",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=30,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "a.toml").write_text(null_model("t/a", 0.1) + null_model("t/b"))
    (tmp_path / "b.toml").write_text(null_model("t/a", 0.2) + null_model("t/c"))
    return tmp_path


def test_gateways_serve_the_database_and_follow_a_seed(root: Path) -> None:
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "a.toml")}
    first = Server(root / "first", env).start()
    # A second gateway on the same database that seeds nothing and names no catalog file:
    # it serves what the database holds, not the packaged default models.
    second_env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_HOME": str(first.home),
        "INFERD_SEED_CATALOG": "false",
    }
    second = Server(root / "second", second_env).start()
    try:
        for server in (first, second):
            assert model_ids(server) == {"t/a", "t/b"}
            assert chat(server, "t/b").status_code == 200
        pid_a = first.worker_pids("t/a")

        seed(first, root / "b.toml")
        seeded = time.monotonic()
        waited = {}
        for server in (first, second):
            while model_ids(server) != {"t/a", "t/c"}:
                assert time.monotonic() - seeded < 10, model_ids(server)
                time.sleep(0.1)
            waited[server.port] = time.monotonic() - seeded
        # One reconcile interval (1 s) and a poll; the issue asks for 2 s.
        assert max(waited.values()) < 2.5, waited

        for server in (first, second):
            assert chat(server, "t/c").status_code == 200
            gone = chat(server, "t/b")
            assert gone.status_code == 404, gone.text
            assert "t/b" in gone.json()["error"]["message"]
        # A price change is a catalog change: t/a's replicas were not restarted.
        assert first.worker_pids("t/a") == pid_a

        # A restart with the seeded file writes nothing new.
        first.stop()
        first.env["INFERD_CATALOG"] = str(root / "b.toml")
        first.start()
        assert model_ids(first) == {"t/a", "t/c"}
        db = Database(f"sqlite:///{first.home / 'inferd.db'}")
        assert versions(db) == {
            "t/a": [(1, "deleted"), (2, "running")],
            "t/b": [(1, "deleted")],
            "t/c": [(1, "running")],
        }
        db.close()
    finally:
        second.stop()
        first.stop()
