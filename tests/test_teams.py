"""Teams and roles, enforced by the server: a team's bootstrap key and its admins manage billing
and roles, a member's keys (and keys a member creates) read the team and usage but get 403 on
billing and roles, scoped JWTs get 403 on every management endpoint, and admin actions land
in the audit log. Members come from the operator's CLI here (test_sso signs them in)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, NULL_CATALOG, Server

SECRET_CANARY = "oidc-client-secret-canary-7781"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("teams")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml")}
    srv = Server(root, env).start()
    yield srv
    srv.stop()


def cli(server: Server, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "inferd", *args],
        env=server.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_roles_are_enforced_for_every_key(team_server: Server) -> None:
    created = httpx.post(
        team_server.url + "/v1/accounts",
        json={"name": "acme"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    bootstrap = client(team_server, created["api_key"])
    alice_id = cli(team_server, "teams", "add-member", "acme", "Alice@Acme.test", "--role", "admin")
    bob_id = cli(team_server, "teams", "add-member", "acme", "bob@acme.test")
    bob = client(
        team_server, cli(team_server, "teams", "key", "acme", "bob@acme.test", "--name", "bob")
    )
    alice = client(
        team_server, cli(team_server, "teams", "key", "acme", "alice@acme.test", "--name", "alice")
    )

    team = bob.get("/v1/team").json()
    assert team["team_id"] == "acme" and team["role"] == "member"
    assert team["user"] == "bob@acme.test"
    assert {(m["email"], m["role"]) for m in team["members"]} == {
        ("alice@acme.test", "admin"),
        ("bob@acme.test", "member"),
    }
    # A member uses the team's models and reads usage, but billing and roles are admins'.
    assert bob.get("/v1/usage").status_code == 200
    for method, path, body in (
        ("GET", "/v1/billing", None),
        ("PUT", "/v1/billing", {"spending_limit": 100}),
        ("PATCH", f"/v1/team/members/{bob_id}", {"role": "admin"}),
        ("GET", "/v1/team/audit", None),
    ):
        refused = bob.request(method, path, json=body)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    # A key a member creates is a member's key too.
    minted = bob.post("/v1/api-tokens", json={"name": "bob-ci"}).json()["token"]
    assert client(team_server, minted).get("/v1/billing").status_code == 403

    # The bootstrap key and an admin's key manage billing; each change is audited.
    assert bootstrap.put("/v1/billing", json={"spending_limit": 25}).json() == {
        "spending_limit": 25.0,
        "spent": 0.0,
    }
    assert alice.put("/v1/billing", json={"spending_limit": 50}).status_code == 200
    assert alice.get("/v1/billing").json()["spending_limit"] == 50.0

    # Bob becomes an admin: his keys act as one at once; the last admin stays an admin.
    promoted = alice.patch(f"/v1/team/members/{bob_id}", json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert bob.get("/v1/billing").status_code == 200
    assert bob.patch(f"/v1/team/members/{alice_id}", json={"role": "member"}).status_code == 200
    last = bob.patch(f"/v1/team/members/{bob_id}", json={"role": "member"})
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
    assert alice.get("/v1/billing").status_code == 403  # alice is a member now
    assert bob.patch("/v1/team/members/usr_nobody", json={"role": "admin"}).status_code == 404
    assert bob.patch(f"/v1/team/members/{alice_id}", json={"role": "owner"}).status_code == 400

    audit = bob.get("/v1/team/audit").json()
    seen = [(e["actor"], e["action"], e["target"], e["detail"]) for e in audit]
    assert ("key:auto", "billing.spending_limit", "acme", "25") in seen
    assert ("user:alice@acme.test", "billing.spending_limit", "acme", "50") in seen
    assert ("user:alice@acme.test", "member.role", "bob@acme.test", "admin") in seen
    assert ("user:bob@acme.test", "member.role", "alice@acme.test", "member") in seen

    # Another team's admin sees none of it.
    other = httpx.post(
        team_server.url + "/v1/accounts",
        json={"name": "globex"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    globex = client(team_server, other["api_key"])
    assert globex.patch(f"/v1/team/members/{bob_id}", json={"role": "member"}).status_code == 404
    assert [m["email"] for m in globex.get("/v1/team").json()["members"]] == []


def test_scoped_jwts_cannot_manage_anything(team_server: Server) -> None:
    created = httpx.post(
        team_server.url + "/v1/accounts",
        json={"name": "initech"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    owner = client(team_server, created["api_key"])
    token = owner.post(
        "/v1/scoped-jwt", json={"api_key_name": "auto", "expires_delta": 600}
    ).json()["token"]
    scoped = client(team_server, token)
    for method, path, body in (
        ("GET", "/v1/team", None),
        ("GET", "/v1/billing", None),
        ("PUT", "/v1/billing", {"spending_limit": 1}),
        ("GET", "/v1/team/audit", None),
        ("GET", "/v1/api-tokens", None),
        ("POST", "/v1/api-tokens", {"name": "x"}),
        ("GET", "/deploy/list", None),
        ("GET", "/v1/containers", None),
        ("PUT", "/v1/accounts/initech/sso", None),
        ("GET", "/models/lora/list", None),
        ("DELETE", "/lora-model/initech/x", None),
        ("GET", "/v1/webhooks/secret", None),
        ("POST", "/v1/webhooks/secret/rotate", None),
    ):
        refused = scoped.request(method, path, json=body)
        assert refused.status_code == 403, (path, refused.text)
    # Nor sign in to the dashboard.
    with httpx.Client(base_url=team_server.url, timeout=30) as browser:
        assert browser.post("/login", data={"api_key": token}).status_code == 403


def test_sso_settings_are_the_operators_and_the_secret_is_write_only(
    team_server: Server,
) -> None:
    created = httpx.post(
        team_server.url + "/v1/accounts",
        json={"name": "umbrella"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    team_admin = client(team_server, created["api_key"])
    body = {
        "issuer": "https://umbrella.okta.test",
        "client_id": "0oa-umbrella",
        "client_secret": SECRET_CANARY,
        "admin_email": "Boss@Umbrella.test",
    }
    assert team_admin.put("/v1/accounts/umbrella/sso", json=body).status_code == 403
    with client(team_server, ADMIN_KEY) as operator:
        saved = operator.put("/v1/accounts/umbrella/sso", json=body)
        assert saved.status_code == 200, saved.text
        assert saved.json()["login_url"].endswith("/sso/umbrella/login")
        assert saved.json()["admin_email"] == "boss@umbrella.test"
        read = operator.get("/v1/accounts/umbrella/sso")
        assert read.status_code == 200 and SECRET_CANARY not in read.text
        assert operator.put("/v1/accounts/nobody/sso", json=body).status_code == 404
        bad = operator.put("/v1/accounts/umbrella/sso", json={**body, "issuer": "okta"})
        assert bad.status_code == 400
    assert SECRET_CANARY not in team_server.log_text()
    database = (team_server.home / "inferd.db").read_bytes()
    assert SECRET_CANARY.encode() not in database


def test_removed_members_and_revoked_keys_lose_access_at_once(team_server: Server) -> None:
    created = httpx.post(
        team_server.url + "/v1/accounts",
        json={"name": "hooli"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    owner = client(team_server, created["api_key"])
    dana_id = cli(team_server, "teams", "add-member", "hooli", "dana@hooli.test")
    erin_id = cli(team_server, "teams", "add-member", "hooli", "erin@hooli.test", "--role", "admin")
    dana = client(
        team_server, cli(team_server, "teams", "key", "hooli", "dana@hooli.test", "--name", "d")
    )
    assert dana.get("/v1/team").status_code == 200
    # A member may not remove anyone; an admin may; the last admin user stays.
    assert dana.delete(f"/v1/team/members/{erin_id}").status_code == 403
    removed = owner.delete(f"/v1/team/members/{dana_id}")
    assert removed.status_code == 200 and removed.json()["email"] == "dana@hooli.test"
    assert dana.get("/v1/team").status_code == 401  # her key went with her
    assert owner.delete(f"/v1/team/members/{dana_id}").status_code == 404
    last = owner.delete(f"/v1/team/members/{erin_id}")
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
    actions = [(e["action"], e["target"]) for e in owner.get("/v1/team/audit").json()]
    assert ("member.remove", "dana@hooli.test") in actions

    # A browser signed in with a key is signed out when the key is revoked.
    minted = owner.post("/v1/api-tokens", json={"name": "laptop"}).json()["token"]
    with httpx.Client(base_url=team_server.url, timeout=30) as browser:
        assert browser.post("/login", data={"api_key": minted}).status_code == 303
        assert browser.get("/dash/api_keys").status_code == 200
        assert owner.delete("/v1/api-tokens/laptop").status_code == 200
        ended = browser.get("/dash/api_keys")
        assert ended.status_code == 303 and ended.headers["location"] == "/login"
