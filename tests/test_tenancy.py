"""Accounts, API keys, scoped JWTs, concurrency and spending limits, and the usage ledger.

Every test runs twice: on the embedded default (SQLite, in-process limits) and in production
mode (PostgreSQL and Redis on this machine). The catalog is a priced null model so the tests
measure the tenancy layer, not a model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import ADMIN_KEY, Server

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
FAST = "test/null"
SLOW = "test/slow"
OTHER = "test/other"
CATALOG = f"""
[[models]]
name = "{FAST}"
task = "text-generation"
engine = "null"
price = {{ input_per_1m = 1000.0, output_per_1m = 2000.0 }}

[[models]]
name = "{SLOW}"
task = "text-generation"
engine = "null"
price = {{ per_request = 0.001 }}
options = {{ tokens = 30, token_delay_ms = 100 }}

[[models]]
name = "{OTHER}"
task = "text-generation"
engine = "null"
"""


def services_available() -> bool:
    try:
        import redis
        import sqlalchemy

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        sqlalchemy.create_engine(
            POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"),
            connect_args={"connect_timeout": 2},
        ).connect().close()
        return True
    except Exception:
        return False


def postgres(*statements: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")
    )
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sqlalchemy.text(statement))
    engine.dispose()


def reset_postgres() -> None:
    """Every table gone (whatever later migrations added): the next server migrates afresh."""
    postgres("DROP SCHEMA public CASCADE", "CREATE SCHEMA public")


def mode_env(mode: str) -> dict[str, str]:
    if mode == "embedded":
        return {}
    return {
        "INFERD_DATABASE_URL": POSTGRES_URL,
        "INFERD_REDIS_URL": REDIS_URL,
        "INFERD_REDIS_PREFIX": f"test-{secrets.token_hex(4)}",
    }


@pytest.fixture(scope="module", params=["embedded", "production"])
def tenancy(request, tmp_path_factory) -> Iterator[Server]:
    mode = request.param
    if mode == "production":
        if not services_available():
            if __import__("os").environ.get("CI"):
                pytest.fail("CI requires PostgreSQL and Redis on 127.0.0.1")
            pytest.skip("PostgreSQL or Redis not reachable")
        reset_postgres()
    root = tmp_path_factory.mktemp(f"tenancy-{mode}")
    (root / "catalog.toml").write_text(CATALOG)
    server = Server(
        root,
        {
            "INFERD_ADMIN_KEY": ADMIN_KEY,
            "INFERD_CATALOG": str(root / "catalog.toml"),
            **mode_env(mode),
        },
    )
    server.mode = mode  # type: ignore[attr-defined]
    server.start(timeout=60)
    yield server
    server.stop()


def admin(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
    )


def new_account(server: Server, **limits) -> tuple[str, str]:
    name = "team-" + secrets.token_hex(4)
    with admin(server) as c:
        r = c.post("/v1/accounts", json={"name": name, **limits})
    assert r.status_code == 200, r.text
    return r.json()["id"], r.json()["api_key"]


def chat(server: Server, credential: str, model: str = FAST, **extra) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/openai/chat/completions",
        headers={"Authorization": f"Bearer {credential}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
        timeout=60,
    )


def self_minted(account_id: str, key_name: str, key: str, **payload) -> str:
    """Exactly the seed page's recipe, with PyJWT."""
    header = {
        "alg": "HS256",
        "kid": f"{account_id}:{base64.b64encode(key_name.encode()).decode()}",
        "typ": "JWT",
    }
    claims = {"sub": account_id, "model": FAST, "exp": int(time.time()) + 3600, **payload}
    return "jwt:" + jwt.encode(claims, key, algorithm="HS256", headers=header)


# -- accounts and keys -------------------------------------------------------------------------


def test_accounts_and_keys_lifecycle(tenancy: Server) -> None:
    _, key = new_account(tenancy)
    assert chat(tenancy, key).status_code == 200
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(tenancy.url + "/v1/accounts", headers=auth, json={"name": "nope"})
    assert r.status_code == 403  # only admins create accounts
    r = httpx.post(tenancy.url + "/v1/api-tokens", headers=auth, json={"name": "ci"})
    assert r.status_code == 200
    ci_key = r.json()["token"]
    assert (
        httpx.post(tenancy.url + "/v1/api-tokens", headers=auth, json={"name": "ci"}).status_code
        == 409
    )
    listed = httpx.get(tenancy.url + "/v1/api-tokens", headers=auth).json()
    assert [(k["name"], k["alias_of"]) for k in listed] == [("auto", None), ("ci", None)]
    assert ci_key not in str(listed)
    assert chat(tenancy, ci_key).status_code == 200
    r = httpx.delete(tenancy.url + "/v1/api-tokens/ci", headers=auth)
    assert r.status_code == 200
    # Revoked: refused at once (no cache grace period).
    assert chat(tenancy, ci_key).status_code == 401
    assert httpx.delete(tenancy.url + "/v1/api-tokens/ci", headers=auth).status_code == 404


def test_keys_are_not_stored_in_plaintext(tenancy: Server) -> None:
    _, key = new_account(tenancy)
    if tenancy.mode == "embedded":  # type: ignore[attr-defined]
        data = (tenancy.home / "inferd.db").read_bytes()
        for path in tenancy.home.glob("inferd.db*"):
            data += path.read_bytes()
        assert key.encode() not in data
        assert ADMIN_KEY.encode() not in data
    else:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")
        )
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("select * from api_keys")).fetchall()
        engine.dispose()
        assert key not in str(rows) and ADMIN_KEY not in str(rows)


# -- scoped JWTs ---------------------------------------------------------------------------------


def test_self_minted_jwt_per_seed_page(tenancy: Server) -> None:
    account_id, key = new_account(tenancy)
    token = self_minted(account_id, "auto", key)
    assert chat(tenancy, token).status_code == 200
    r = chat(tenancy, token, model=OTHER)
    assert r.status_code == 403 and "may not use" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "attack",
    [
        "expired",
        "alg_none",
        "hs512",
        "tampered_payload",
        "tampered_signature",
        "unknown_kid",
        "wrong_key",
        "too_far_ahead",
        "sub_mismatch",
        "garbage",
    ],
)
def test_jwt_attacks_are_refused(tenancy: Server, attack: str) -> None:
    account_id, key = new_account(tenancy)
    kid = f"{account_id}:{base64.b64encode(b'auto').decode()}"
    now = int(time.time())
    claims = {"sub": account_id, "model": FAST, "exp": now + 3600}
    header = {"kid": kid, "typ": "JWT"}
    if attack == "expired":
        token = jwt.encode({**claims, "exp": now - 300}, key, "HS256", headers=header)
    elif attack == "alg_none":
        token = jwt.encode(claims, None, algorithm="none", headers=header)
    elif attack == "hs512":
        token = jwt.encode(claims, key, "HS512", headers=header)
    elif attack in ("tampered_payload", "tampered_signature"):
        good = jwt.encode(claims, key, "HS256", headers=header)
        h, p, s = good.split(".")
        if attack == "tampered_payload":
            forged = (
                base64.urlsafe_b64encode(json.dumps({**claims, "model": OTHER}).encode())
                .rstrip(b"=")
                .decode()
            )
            token = f"{h}.{forged}.{s}"
        else:
            token = f"{h}.{p}.{s[:-4]}AAAA"
    elif attack == "unknown_kid":
        token = jwt.encode(
            claims, key, "HS256", headers={"kid": f"{account_id}:{base64.b64encode(b'x').decode()}"}
        )
    elif attack == "wrong_key":
        token = jwt.encode(claims, "ik_not_the_key", "HS256", headers=header)
    elif attack == "too_far_ahead":
        token = jwt.encode({**claims, "exp": now + 30 * 86400}, key, "HS256", headers=header)
    elif attack == "sub_mismatch":
        token = jwt.encode({**claims, "sub": "acc_someone_else"}, key, "HS256", headers=header)
    else:
        token = "not.a.jwt"
    r = chat(tenancy, "jwt:" + token, model=OTHER if attack == "tampered_payload" else FAST)
    assert r.status_code == 401, (attack, r.text)
    assert r.json()["error"]["type"] == "authentication_error"


def test_jwt_of_revoked_key_stops_working(tenancy: Server) -> None:
    account_id, key = new_account(tenancy)
    auth = {"Authorization": f"Bearer {key}"}
    signer = httpx.post(
        tenancy.url + "/v1/api-tokens", headers=auth, json={"name": "signer"}
    ).json()["token"]
    token = self_minted(account_id, "signer", signer)
    assert chat(tenancy, token).status_code == 200
    httpx.delete(tenancy.url + "/v1/api-tokens/signer", headers=auth)
    assert chat(tenancy, token).status_code == 401


def test_server_issued_jwt(tenancy: Server) -> None:
    account_id, key = new_account(tenancy)
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(
        tenancy.url + "/v1/scoped-jwt",
        headers=auth,
        json={"api_key_name": "auto", "models": [FAST], "spending_limit": 1.0},
    )
    assert r.status_code == 200
    token = r.json()["token"]
    assert token.startswith("jwt:")
    header = jwt.get_unverified_header(token[4:])
    assert header["alg"] == "HS256" and header["typ"] == "JWT"
    assert header["kid"] == f"{account_id}:{base64.b64encode(b'auto').decode()}"
    claims = jwt.decode(token[4:], key, algorithms=["HS256"])
    assert claims["sub"] == account_id
    assert 364 * 86400 < claims["exp"] - time.time() < 366 * 86400  # default: one year
    # The reservation is the request's maximum cost: bounded by max_tokens.
    assert chat(tenancy, token, max_tokens=5).status_code == 200
    r = chat(tenancy, token)
    assert r.status_code == 402 and "spending limit" in r.json()["error"]["message"].lower()
    assert chat(tenancy, token, model=OTHER).status_code == 403
    decoded = httpx.get(
        tenancy.url + "/v1/scoped-jwt", headers=auth, params={"jwtoken": token}
    ).json()
    assert decoded["models"] == [FAST] and decoded["spending_limit"] == 1.0
    assert decoded["expires_at"] == claims["exp"]
    _, other_key = new_account(tenancy)
    r = httpx.get(
        tenancy.url + "/v1/scoped-jwt",
        headers={"Authorization": f"Bearer {other_key}"},
        params={"jwtoken": token},
    )
    assert r.status_code == 403
    # A JWT is for inference only.
    r = httpx.post(
        tenancy.url + "/v1/api-tokens",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "x"},
    )
    assert r.status_code == 403
    r = httpx.post(tenancy.url + "/v1/scoped-jwt", headers=auth, json={"api_key_name": "missing"})
    assert r.status_code == 404
    short = httpx.post(
        tenancy.url + "/v1/scoped-jwt",
        headers=auth,
        json={"api_key_name": "auto", "expires_delta": 1},
    ).json()["token"]
    time.sleep(2.2)
    assert chat(tenancy, short).status_code == 401


# -- the `auto` key ------------------------------------------------------------------------------


def test_first_keys_are_auto(tenancy: Server) -> None:
    with admin(tenancy) as c:
        r = c.post("/v1/accounts", json={"name": "team-" + secrets.token_hex(4)})
        assert r.json()["api_key_name"] == "auto"
        # INFERD_ADMIN_KEY is installed as the admin's `auto` key.
        listed = c.get("/v1/api-tokens").json()
        assert [(k["name"], k["prefix"]) for k in listed] == [("auto", ADMIN_KEY[:7])]
        r = c.post("/v1/scoped-jwt", json={"api_key_name": "auto", "models": [FAST]})
    assert chat(tenancy, r.json()["token"]).status_code == 200
    name = "cli-" + secrets.token_hex(4)
    cli = [sys.executable, "-m", "inferd"]
    run = {"env": tenancy.env, "capture_output": True, "text": True, "check": True}
    subprocess.run([*cli, "accounts", "create", name], **run)
    out = subprocess.run([*cli, "keys", "list", "--account", name], **run).stdout
    assert [line.split("\t")[0] for line in out.splitlines()] == ["auto"]


def old_install(url: str, master: str) -> dict[str, tuple[str, str]]:
    """A database as the code before `auto` left it (schema 0001, first keys named `default`):
    account name → (account id, its `default` key)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from inferd.auth.keys import KeyVault
    from inferd.store.db import MIGRATIONS, Database

    db = Database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    vault = KeyVault(master.encode())
    accounts: dict[str, tuple[str, str]] = {}
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        for name, keys in (("admin", ["default"]), ("a", ["default", "ci"]), ("b", ["default"])):
            account_id = "acc_" + secrets.token_hex(8)
            conn.execute(
                text(
                    "INSERT INTO accounts (id, name, is_admin, created_at)"
                    " VALUES (:id, :name, :admin, :at)"
                ),
                {"id": account_id, "name": name, "admin": name == "admin", "at": datetime.now(UTC)},
            )
            for key_name in keys:
                key = "ik_" + secrets.token_urlsafe(32)
                conn.execute(
                    text(
                        "INSERT INTO api_keys"
                        " (account_id, name, key_hash, key_encrypted, prefix, created_at)"
                        " VALUES (:account, :name, :hash, :sealed, :prefix, :at)"
                    ),
                    {
                        "account": account_id,
                        "name": key_name,
                        "hash": vault.digest(key),
                        "sealed": vault.encrypt(key),
                        "prefix": key[:7],
                        "at": datetime.now(UTC),
                    },
                )
                accounts.setdefault(name, (account_id, key))
                accounts[f"{name}/{key_name}"] = (account_id, key)
    db.close()
    return accounts


def test_upgrade_keeps_default_and_aliases_auto(tenancy: Server, tmp_path: Path) -> None:
    """An install from before `auto`: outstanding JWTs naming `default` keep working, `auto`
    names the same key, and revoking the key (or only the alias) takes effect at once."""
    mode = tenancy.mode  # type: ignore[attr-defined]
    master = "upgrade-test-master-secret"
    env = {"INFERD_MASTER_KEY": master, "INFERD_CATALOG": str(tenancy.root / "catalog.toml")}
    if mode == "embedded":
        (tmp_path / "home").mkdir()
        url = f"sqlite:///{tmp_path / 'home' / 'inferd.db'}"
    else:
        # Its own schema: the shared fixture's server keeps the public one.
        postgres("DROP SCHEMA IF EXISTS inferd_upgrade CASCADE", "CREATE SCHEMA inferd_upgrade")
        url = POSTGRES_URL + "?options=-csearch_path%3Dinferd_upgrade"
        env |= {**mode_env(mode), "INFERD_DATABASE_URL": url}
    accounts = old_install(url, master)
    server = Server(tmp_path, env)
    server.env.pop("INFERD_ADMIN_KEY", None)
    server.start(timeout=60)
    try:
        assert "admin API key" not in server.log_text()  # the admin keeps its key
        a_id, a_key = accounts["a"]
        b_id, b_key = accounts["b"]
        _, a_ci = accounts["a/ci"]
        a_auth = {"Authorization": f"Bearer {a_key}"}
        a_default = self_minted(a_id, "default", a_key)
        a_auto = self_minted(a_id, "auto", a_key)
        assert chat(server, a_default).status_code == 200
        assert chat(server, a_auto).status_code == 200
        listed = httpx.get(server.url + "/v1/api-tokens", headers=a_auth).json()
        assert [(k["name"], k["alias_of"]) for k in listed] == [
            ("default", None),
            ("auto", "default"),
            ("ci", None),
        ]
        assert listed[1]["prefix"] == listed[0]["prefix"] == a_key[:7]
        r = httpx.post(server.url + "/v1/api-tokens", headers=a_auth, json={"name": "auto"})
        assert r.status_code == 409
        minted = httpx.post(
            server.url + "/v1/scoped-jwt",
            headers=a_auth,
            json={"api_key_name": "auto", "models": [FAST], "expires_delta": 3600},
        ).json()["token"]
        assert chat(server, minted).status_code == 200
        decoded = httpx.get(
            server.url + "/v1/scoped-jwt", headers=a_auth, params={"jwtoken": minted}
        ).json()
        assert decoded["api_key_name"] == "auto" and decoded["models"] == [FAST]
        # Revoking the first key revokes its alias.
        r = httpx.delete(
            server.url + "/v1/api-tokens/default", headers={"Authorization": f"Bearer {a_ci}"}
        )
        assert r.status_code == 200
        for token in (a_default, a_auto, minted, a_key):
            assert chat(server, token).status_code == 401
        r = httpx.post(
            server.url + "/v1/scoped-jwt",
            headers={"Authorization": f"Bearer {a_ci}"},
            json={"api_key_name": "auto"},
        )
        assert r.status_code == 404

        # Revoking only the alias: the key keeps working under its own name.
        b_auth = {"Authorization": f"Bearer {b_key}"}
        b_default = self_minted(b_id, "default", b_key)
        b_auto = self_minted(b_id, "auto", b_key)
        assert chat(server, b_auto).status_code == 200
        assert httpx.delete(server.url + "/v1/api-tokens/auto", headers=b_auth).status_code == 200
        assert chat(server, b_auto).status_code == 401
        assert chat(server, b_default).status_code == 200
        assert chat(server, b_key).status_code == 200
        # ... and `auto` can then be a key of its own.
        r = httpx.post(server.url + "/v1/api-tokens", headers=b_auth, json={"name": "auto"})
        assert r.status_code == 200
        assert chat(server, self_minted(b_id, "auto", r.json()["token"])).status_code == 200
        assert chat(server, b_auto).status_code == 401

        # The admin's old key answers to `auto` as well.
        admin_id, admin_key = accounts["admin"]
        assert chat(server, self_minted(admin_id, "auto", admin_key)).status_code == 200
    finally:
        server.stop()
        if mode != "embedded":
            postgres("DROP SCHEMA inferd_upgrade CASCADE")


# -- limits ----------------------------------------------------------------------------------------


def test_concurrency_limit_and_release(tenancy: Server) -> None:
    _, key = new_account(tenancy, concurrency_limit=2)

    async def storm() -> list[int]:
        async with httpx.AsyncClient(
            base_url=tenancy.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        ) as c:

            async def one() -> int:
                r = await c.post(
                    "/v1/openai/chat/completions",
                    json={
                        "model": SLOW,
                        "messages": [{"role": "user", "content": "x"}],
                        "stream": True,
                    },
                )
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(5)))

    statuses = asyncio.run(storm())
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    r = chat(tenancy, key, model=SLOW)  # slots came back
    assert r.status_code == 200
    # The other model has its own 2 slots.
    assert chat(tenancy, key).status_code == 200


def test_rate_limited_shape(tenancy: Server) -> None:
    _, key = new_account(tenancy, concurrency_limit=1)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": SLOW, "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream(
        "POST", tenancy.url + "/v1/openai/chat/completions", headers=headers, json=body, timeout=60
    ) as first:
        assert first.status_code == 200
        second = chat(tenancy, key, model=SLOW)
        assert second.status_code == 429
        assert second.json()["error"]["message"] == "Rate limited"
        assert second.json()["error"]["type"] == "rate_limit_error"
        native = httpx.post(
            f"{tenancy.url}/v1/inference/{SLOW}", headers=headers, json={"input": "x"}
        )
        assert native.status_code == 429


def test_jwt_spending_limit_under_concurrency(tenancy: Server) -> None:
    account_id, key = new_account(tenancy)
    limit = 0.0105  # 10 requests of $0.001, plus change
    token = httpx.post(
        tenancy.url + "/v1/scoped-jwt",
        headers={"Authorization": f"Bearer {key}"},
        json={"api_key_name": "auto", "spending_limit": limit},
    ).json()["token"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=tenancy.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as c:

            async def one() -> int:
                r = await c.post(f"/v1/inference/{SLOW}", json={"input": "x", "max_new_tokens": 3})
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(50)))

    statuses = asyncio.run(burst())
    assert set(statuses) <= {200, 402}
    assert statuses.count(402) > 0
    with admin(tenancy) as c:
        rows = c.get("/v1/usage", params={"account": account_id}).json()
    settled = rows["total_cost"]
    assert settled <= limit + 1e-9
    assert settled == pytest.approx(0.001 * statuses.count(200))
    r = chat(tenancy, token, model=SLOW)
    assert r.status_code == 402 and "spending limit" in r.json()["error"]["message"].lower()


def test_account_spending_limit(tenancy: Server) -> None:
    _, key = new_account(tenancy, spending_limit=0.0025)
    codes = [chat(tenancy, key, model=SLOW).status_code for _ in range(4)]
    assert codes == [200, 200, 402, 402]


# -- usage -----------------------------------------------------------------------------------------


def test_usage_ledger_and_cli(tenancy: Server) -> None:
    account_id, key = new_account(tenancy)
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        r = chat(tenancy, key)
        assert r.status_code == 200
    cost = r.json()["usage"]["estimated_cost"]
    assert cost > 0
    chat(tenancy, key, model=OTHER)
    usage = httpx.get(tenancy.url + "/v1/usage", headers=headers).json()
    by_model = {row["model"]: row for row in usage["usage"]}
    assert by_model[FAST]["requests"] == 3
    assert by_model[FAST]["cost"] == pytest.approx(3 * cost)
    assert by_model[OTHER]["requests"] == 1
    assert usage["total_requests"] == 4
    only = httpx.get(
        tenancy.url + "/v1/usage", headers=headers, params={"model": OTHER, "from": "2000-01-01"}
    ).json()
    assert only["total_requests"] == 1
    future = httpx.get(
        tenancy.url + "/v1/usage", headers=headers, params={"from": "2999-01-01"}
    ).json()
    assert future["total_requests"] == 0
    assert (
        httpx.get(
            tenancy.url + "/v1/usage", headers=headers, params={"from": "yesterday"}
        ).status_code
        == 400
    )
    # Another account sees only its own usage.
    _, other = new_account(tenancy)
    assert (
        httpx.get(tenancy.url + "/v1/usage", headers={"Authorization": f"Bearer {other}"}).json()[
            "total_requests"
        ]
        == 0
    )
    if tenancy.mode == "embedded":  # type: ignore[attr-defined]
        with admin(tenancy) as c:
            name = next(a["name"] for a in c.get("/v1/accounts").json() if a["id"] == account_id)
        out = subprocess.run(
            [sys.executable, "-m", "inferd", "usage", "--account", name],
            env=tenancy.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert FAST in out and OTHER in out
