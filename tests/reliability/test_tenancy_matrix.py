"""Issue 17's tenancy matrix: every endpoint called with another account's ids answers 404 and
changes nothing.

One server for the module. Alice owns one of everything an account can own (an API key, a team
member, a file, a batch, a webhook delivery, an LLM deployment, a LoRA deployment, a route) and
Bob calls every operation of the live OpenAPI document whose path names such an object with
Alice's ids: 404 with a JSON error, the same answer (status and body, the id aside) as for an id
that exists nowhere, and Alice's objects, re-read as Alice after every call, unchanged. Bob's
scoped JWT gets the same answer for Alice's ids as for unknown ones too; without a valid
credential every call gets one and the same 401. `COVERED` must equal the document's
operations with a path parameter (less `EXCLUDED`), so an endpoint added later fails here until
it is covered.
Alice's ids in bodies and queries (a batch's input file, list cursors, models, route targets)
and Bob's lists are checked the same way.

Objects are made cheap and stable, so "unchanged" compares exact JSON: the deployments fail at
once (a repository the loopback hub does not have; a LoRA on a base that has no weights), the
batch stays `in_progress`, paused on Alice's spending limit, the delivery is `delivered`.

GPU containers are off on this server (conftest's default; they need podman, nftables and
root): the API answers 503 `containers_unavailable` before looking anything up, to every
account for every id, so nothing leaks. `test_containers_of_another_account` (marked
`containers`, with its own podman-backed server) gives Alice a real container and checks Bob's
404s there.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from inferd.weights.tiny import built_folder
from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server
from tests.hub_double import HubDouble

PRICED = "test/priced"
LORA_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the adapter's base: a null model here
ADAPTER_REPO = "alice-models/secret-lora"
CATALOG = f"""{NULL_CATALOG}
[[models]]
name = "{PRICED}"
task = "text-generation"
engine = "null"
price = {{ per_request = 1.0 }}

[[models]]
name = "{LORA_BASE}"
task = "text-generation"
engine = "null"
tags = ["lora"]
"""
METHODS = ("get", "put", "post", "patch", "delete")

# What Bob's key gets for Alice's ids, by kind of operation.
NOT_FOUND = 404
ADMIN_ONLY = 403  # a server admin's route: refused before any lookup, for every name
CONTAINERS_OFF = 503  # the feature is off: refused before any lookup, for every id

SSO = {
    "issuer": "https://idp.bob.test",
    "client_id": "bob-client",
    "client_secret": "bob-secret",
    "admin_email": "bob@bob.test",
}


@dataclass(frozen=True)
class Probe:
    kind: str  # which of Alice's objects the path parameter names (World.ids)
    body: dict[str, Any] | None = None
    bob_gets: int = NOT_FOUND


# Every operation whose path names an account-owned object, by (method, OpenAPI template).
COVERED: dict[tuple[str, str], Probe] = {
    # Deployments and routes are models too: to anyone but Alice they do not exist.
    ("GET", "/v1/openai/models/{model}"): Probe("model"),
    ("GET", "/models/{model}"): Probe("model"),
    ("POST", "/v1/inference/{model}"): Probe("model", {"input": "hi", "max_new_tokens": 1}),
    # Alice's account itself: only a server admin manages accounts.
    ("PATCH", "/v1/accounts/{name}"): Probe("account", {"concurrency_limit": 1}, ADMIN_ONLY),
    ("GET", "/v1/accounts/{name}/sso"): Probe("account", None, ADMIN_ONLY),
    ("PUT", "/v1/accounts/{name}/sso"): Probe("account", SSO, ADMIN_ONLY),
    ("DELETE", "/v1/api-tokens/{name}"): Probe("key"),
    ("PATCH", "/v1/team/members/{user_id}"): Probe("member", {"role": "admin"}),
    ("DELETE", "/v1/team/members/{user_id}"): Probe("member"),
    ("DELETE", "/lora-model/{name}"): Probe("lora"),
    ("GET", "/deploy/{deploy_id}"): Probe("deployment"),
    ("PUT", "/deploy/{deploy_id}"): Probe("deployment", {"settings": {"max_instances": 2}}),
    ("DELETE", "/deploy/{deploy_id}"): Probe("deployment"),
    ("POST", "/deploy/{deploy_id}/stop"): Probe("deployment"),
    ("POST", "/deploy/{deploy_id}/start"): Probe("deployment"),
    ("GET", "/v1/containers/{container_id}"): Probe("container", None, CONTAINERS_OFF),
    ("PATCH", "/v1/containers/{container_id}"): Probe(
        "container", {"name": "bobs"}, CONTAINERS_OFF
    ),
    ("DELETE", "/v1/containers/{container_id}"): Probe("container", None, CONTAINERS_OFF),
    ("GET", "/v1/routes/{name}"): Probe("route"),
    ("PUT", "/v1/routes/{name}"): Probe("route", {"targets": [{"model": NULL_MODEL}]}),
    ("DELETE", "/v1/routes/{name}"): Probe("route"),
    ("GET", "/v1/routes/{name}/health"): Probe("route"),
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/resend"): Probe("delivery"),
    ("GET", "/v1/files/{file_id}"): Probe("file"),
    ("GET", "/v1/files/{file_id}/content"): Probe("file"),
    ("DELETE", "/v1/files/{file_id}"): Probe("file"),
    ("GET", "/v1/openai/files/{file_id}"): Probe("file"),
    ("GET", "/v1/openai/files/{file_id}/content"): Probe("file"),
    ("DELETE", "/v1/openai/files/{file_id}"): Probe("file"),
    ("GET", "/v1/batches/{batch_id}"): Probe("batch"),
    ("POST", "/v1/batches/{batch_id}/cancel"): Probe("batch"),
    ("GET", "/v1/openai/batches/{batch_id}"): Probe("batch"),
    ("POST", "/v1/openai/batches/{batch_id}/cancel"): Probe("batch"),
}

# Operations with a path parameter that name no account-owned object, each with the reason.
# (None today: a new one goes here only with a reason a reviewer accepts.)
EXCLUDED: dict[tuple[str, str], str] = {}


def unknown(kind: str) -> str:
    """An id of `kind` shaped like a real one that no account has."""
    return {
        "model": "alice/no-such-model",
        "account": "no-such-account",
        "key": "no-such-key",
        "member": "usr_" + secrets.token_hex(8),
        "lora": "alice/no-such-lora",
        "deployment": secrets.token_hex(10),
        "container": "ctr-" + secrets.token_hex(8),
        "route": "alice/no-such-route",
        "delivery": "msg_" + secrets.token_hex(12),
        "file": "file-" + secrets.token_hex(12),
        "batch": "batch_" + secrets.token_hex(12),
    }[kind]


class Receiver:
    """A webhook receiver on loopback: answers 200 and counts what it got."""

    def __init__(self) -> None:
        self.received = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class World:
    server: Server
    receiver: Receiver
    admin: httpx.Client
    alice: httpx.Client
    bob: httpx.Client
    alice_key: httpx.Client  # the key Alice created (the one Bob tries to revoke)
    bob_jwt: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """Everything of Alice's, as Alice (and the admin) read it."""
        a = self.alice
        [file_id] = self.ids["file"]
        [batch_id] = self.ids["batch"]
        [route] = self.ids["route"]
        accounts = self.admin.get("/v1/accounts").json()
        return {
            "account": [x for x in accounts if x["name"] == "alice"],
            "sso": self.admin.get("/v1/accounts/alice/sso").status_code,
            "keys": a.get("/v1/api-tokens").json(),
            "alice_key_works": self.alice_key.get("/v1/api-tokens").status_code,
            "team": a.get("/v1/team").json(),
            "deployment": [a.get(f"/deploy/{d}").json() for d in self.ids["deployment"]],
            "deployments": a.get("/deploy/list").json(),
            "loras": a.get("/models/lora/list").json(),
            "models": {m: answer(a.get(f"/v1/openai/models/{m}")) for m in self.ids["model"]},
            "route": a.get(f"/v1/routes/{route}").json(),
            "deliveries": a.get("/v1/webhooks/deliveries").json(),
            "received": self.receiver.received,
            "file": a.get(f"/v1/files/{file_id}").json(),
            "content": a.get(f"/v1/files/{file_id}/content").content,
            "files": a.get("/v1/files").json(),
            "batch": a.get(f"/v1/batches/{batch_id}").json(),
        }


def answer(r: httpx.Response) -> tuple[int, Any]:
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def new_account(server: Server, name: str, **limits: Any) -> httpx.Client:
    created = httpx.post(
        server.url + "/v1/accounts",
        json={"name": name, **limits},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    )
    assert created.status_code == 200, created.text
    return client(server, created.json()["api_key"])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubDouble]:
    with HubDouble() as double:
        double.add_repo(ADAPTER_REPO, built_folder("smollm2-secret-lora"))
        yield double


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, hub: HubDouble, receiver: Receiver
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tenancy-matrix")
    (root / "catalog.toml").write_text(CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_HF_ENDPOINT": hub.url,
        "INFERD_MODEL_CACHE": str(root / "models"),
        "INFERD_RECONCILE_INTERVAL_S": "0.3",
        "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}",
        # Alice's paused batch looks for money again only long after the module has ended.
        "INFERD_BATCH_BUDGET_RETRY_S": "3600",
    }
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def world(server: Server, receiver: Receiver) -> Iterator[World]:
    admin = client(server, ADMIN_KEY)
    # Alice's limit pays for nothing priced: her batch (on the priced model) pauses, stably.
    alice = new_account(server, "alice", spending_limit=0.5)
    bob = new_account(server, "bob")
    ids: dict[str, list[str]] = {"account": ["alice"]}

    key = alice.post("/v1/api-tokens", json={"name": "alice-key"})
    assert key.status_code == 200, key.text
    ids["key"] = ["alice-key"]
    alice_key = client(server, key.json()["token"])

    added = subprocess.run(
        [sys.executable, "-m", "inferd", "teams", "add-member", "alice", "carol@alice.test"],
        env=server.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    ids["member"] = [added.stdout.strip()]

    pools = alice.get("/deploy/llm/gpu_availability").json()["gpus"]
    [cpu] = [p["gpu_config"] for p in pools if p["gpu_config"].startswith("CPU-")]
    deployed = alice.post(
        "/deploy/llm",
        json={
            "model_name": "llm",
            "gpu": cpu,
            "num_gpus": 1,
            "max_batch_size": 1,
            "hf": {"repo": "alice-models/not-on-the-hub"},
            "settings": {"min_instances": 0, "max_instances": 1},
        },
    )
    assert deployed.status_code == 200, deployed.text
    ids["deployment"] = [deployed.json()["deploy_id"]]
    lora = alice.post(
        "/lora-model", json={"lora_model_name": "lora", "hf_model_name": ADAPTER_REPO}
    )
    assert lora.status_code == 200, lora.text
    ids["lora"] = [lora.json()["model_name"]]
    ids["deployment"].append(lora.json()["deploy_id"])  # a LoRA is a deployment too

    route = alice.post(
        "/v1/routes", json={"name": "alice/route", "targets": [{"model": NULL_MODEL}]}
    )
    assert route.status_code == 201, route.text
    ids["route"] = ["alice/route"]
    ids["model"] = ["alice/llm", "alice/lora", "alice/route"]

    kept = alice.post(
        "/v1/files", files={"file": ("kept.jsonl", b'{"alice": 1}\n')}, data={"purpose": "batch"}
    )
    assert kept.status_code == 200, kept.text
    ids["file"] = [kept.json()["id"]]
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": PRICED, "messages": [{"role": "user", "content": "hi"}]},
    }
    batch_input = alice.post(
        "/v1/files",
        files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")},
        data={"purpose": "batch"},
    )
    assert batch_input.status_code == 200, batch_input.text
    batch = alice.post(
        "/v1/batches",
        json={
            "input_file_id": batch_input.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert batch.status_code == 200, batch.text
    ids["batch"] = [batch.json()["id"]]

    queued = alice.post(
        f"/v1/inference/{NULL_MODEL}", json={"input": "hi", "webhook": receiver.url}
    )
    assert queued.status_code == 200, queued.text
    request_id = queued.json()["request_id"]

    def delivered() -> str | None:
        for d in alice.get("/v1/webhooks/deliveries").json()["data"]:
            if d["request_id"] == request_id and d["state"] == "delivered":
                return d["id"]
        return None

    ids["delivery"] = [wait_for("Alice's delivery delivered", delivered)]
    ids["container"] = [unknown("container")]  # containers are off: Alice cannot own one

    # Wait for every object to come to rest.
    for deploy_id in ids["deployment"]:
        wait_for(
            f"deployment {deploy_id} failed",
            lambda d=deploy_id: alice.get(f"/deploy/{d}").json()["status"] == "failed",
        )
    wait_for(
        "Alice's batch paused",
        lambda: alice.get(f"/v1/batches/{ids['batch'][0]}").json().get("pause_reason"),
    )

    minted = bob.post(
        "/v1/scoped-jwt", json={"api_key_name": "auto", "models": None, "expires_delta": 3600}
    )
    assert minted.status_code == 200, minted.text
    yield World(server, receiver, admin, alice, bob, alice_key, minted.json()["token"], ids)
    for c in (admin, alice, bob, alice_key):
        c.close()


def call(
    server: Server, method: str, template: str, value: str, probe: Probe, credential: str | None
) -> httpx.Response:
    [param] = [part for part in template.split("/") if part.startswith("{")]
    path = template.replace(param, quote(value, safe="/:"))
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.request(method, server.url + path, json=probe.body, headers=headers, timeout=60)


def key_of(c: httpx.Client) -> str:
    return c.headers["Authorization"].removeprefix("Bearer ")


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The JSON error body every refusal has."""
    assert r.headers.get("content-type", "").startswith("application/json"), r.text[:200]
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "code"}, body
    return body


def normal(r: httpx.Response, value: str) -> tuple[int, str]:
    """The answer with the id taken out: what Alice's id and an unknown id must share."""
    return r.status_code, r.text.replace(value, "<ID>")


def test_the_matrix_covers_every_owned_object_path(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json", timeout=60).json()
    found = {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method in operations
        if method in METHODS and "{" in path
    }
    assert not set(COVERED) & set(EXCLUDED)
    missing = sorted(found - set(COVERED) - set(EXCLUDED))
    assert not missing, f"operations the tenancy matrix does not cover: {missing}"
    stale = sorted((set(COVERED) | set(EXCLUDED)) - found)
    assert not stale, f"no longer in the OpenAPI document: {stale}"


def test_bob_gets_404_for_alice_ids_and_changes_nothing(world: World) -> None:
    assert all(world.ids[probe.kind] for probe in COVERED.values())
    bob_key = key_of(world.bob)
    before = world.snapshot()
    problems: list[str] = []
    for (method, template), probe in COVERED.items():
        for value in world.ids[probe.kind]:
            where = f"{method} {template} with Alice's {probe.kind} {value!r}"
            r = call(world.server, method, template, value, probe, bob_key)
            if r.status_code != probe.bob_gets:
                problems.append(f"{where}: {r.status_code}, not {probe.bob_gets}: {r.text[:200]}")
            else:
                code = error_of(r)["error"]["code"]
                if probe.bob_gets == NOT_FOUND and code not in ("not_found", "model_not_found"):
                    problems.append(f"{where}: error code {code!r}")
                other = unknown(probe.kind)
                u = call(world.server, method, template, other, probe, bob_key)
                if normal(r, value) != normal(u, other):
                    problems.append(
                        f"{where}: not the answer to an unknown id: {r.text[:200]} / {u.text[:200]}"
                    )
            after = world.snapshot()
            changed = sorted(k for k in before if after[k] != before[k])
            if changed:
                problems.append(f"{where}: changed Alice's {changed}")
                before = after
    assert not problems, "\n".join(problems)


def test_bobs_scoped_jwt_learns_nothing(world: World) -> None:
    """Bob's scoped JWT: 403 on management routes, 404 on models, for Alice's ids exactly as
    for ids that exist nowhere; nothing changes."""
    before = world.snapshot()
    problems: list[str] = []
    for (method, template), probe in COVERED.items():
        for value in world.ids[probe.kind]:
            where = f"{method} {template} with Alice's {probe.kind} {value!r}"
            r = call(world.server, method, template, value, probe, world.bob_jwt)
            error_of(r)
            if r.status_code not in (403, 404):
                problems.append(f"{where}: {r.status_code} {r.text[:200]}")
            other = unknown(probe.kind)
            u = call(world.server, method, template, other, probe, world.bob_jwt)
            if normal(r, value) != normal(u, other):
                problems.append(
                    f"{where}: not the answer to an unknown id: {r.text[:200]} / {u.text[:200]}"
                )
    assert not problems, "\n".join(problems)
    assert world.snapshot() == before


@pytest.mark.parametrize("credential", [None, "ik_not-a-key-0123456789abcdefghij"])
def test_without_a_valid_credential_every_answer_is_one_401(
    world: World, credential: str | None
) -> None:
    """No credential, or a key that does not exist: one and the same 401 for every operation
    and every id (so nothing about Alice's objects), and nothing changes."""
    before = world.snapshot()
    answers: dict[tuple[int, str], list[str]] = {}
    for (method, template), probe in COVERED.items():
        for value in world.ids[probe.kind]:
            r = call(world.server, method, template, value, probe, credential)
            error_of(r)
            answers.setdefault(normal(r, value), []).append(f"{method} {template}")
    assert len(answers) == 1, answers
    [(status, _)] = answers
    assert status == 401
    assert world.snapshot() == before


def test_alice_ids_in_bodies_and_queries(world: World) -> None:
    """Ids that travel in a body or a query (a batch's input file, a list cursor, a model, a
    route's target, a key to sign with, an account to report on): Bob gets for Alice's the
    answer he gets for ids that exist nowhere, and Alice's objects do not change."""
    bob, ids = world.bob, world.ids
    [file_id], [batch_id] = ids["file"], ids["batch"]
    before = world.snapshot()

    def same(method: str, path: str, mine: str, other: str, body_of=None, query_of=None) -> None:
        def ask(value: str) -> httpx.Response:
            return bob.request(
                method,
                path,
                json=body_of(value) if body_of else None,
                params=query_of(value) if query_of else None,
            )

        r, u = ask(mine), ask(other)
        assert 400 <= r.status_code < 500, (path, mine, r.text)
        error_of(r)
        assert normal(r, mine) == normal(u, other), (path, r.text, u.text)

    for prefix in ("/v1", "/v1/openai"):
        same(
            "POST",
            f"{prefix}/batches",
            file_id,
            unknown("file"),
            body_of=lambda v: {
                "input_file_id": v,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        same("GET", f"{prefix}/files", file_id, unknown("file"), query_of=lambda v: {"after": v})
        same(
            "GET", f"{prefix}/batches", batch_id, unknown("batch"), query_of=lambda v: {"after": v}
        )
    for model in ids["model"]:
        same(
            "POST",
            "/v1/openai/chat/completions",
            model,
            unknown("model"),
            body_of=lambda v: {"model": v, "messages": [{"role": "user", "content": "hi"}]},
        )
        same(
            "POST",
            "/v1/routes",
            model,
            unknown("model"),
            body_of=lambda v: {"name": "bob/route", "targets": [{"model": v}]},
        )
    same(
        "POST",
        "/v1/scoped-jwt",
        "alice-key",
        unknown("key"),
        body_of=lambda v: {"api_key_name": v, "expires_delta": 60},
    )
    [alice] = [a for a in world.admin.get("/v1/accounts").json() if a["name"] == "alice"]
    usage = bob.get("/v1/usage", params={"account": alice["id"]})
    assert usage.status_code == 200 and usage.json()["account_id"] != alice["id"], usage.text
    assert world.snapshot() == before


@pytest.mark.containers
def test_containers_of_another_account(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With GPU containers on (podman, its own bridge and subnet): Alice's container, failed at
    once on an image this server does not have (no podman container is ever made), answers
    Bob's GET, PATCH and DELETE with 404, as an unknown id does, and stays as it was."""
    from inferd.config import Settings
    from inferd.control.containers import node_name
    from inferd.control.podman import LABEL_NODE

    bridge, subnet, image = "inferd-tm0", "127.218.0.0/24", "tm-missing:latest"
    root = tmp_path_factory.mktemp("tenancy-containers")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    srv = Server(
        root,
        {
            "INFERD_ADMIN_KEY": ADMIN_KEY,
            "INFERD_CATALOG": str(root / "catalog.toml"),
            "INFERD_CONTAINERS": "true",
            "INFERD_CONTAINER_RECONCILE_S": "1",
            "INFERD_CONTAINER_BRIDGE": bridge,
            "INFERD_CONTAINER_SUBNET": subnet,
        },
    )
    (srv.home / "config.toml").write_text(
        f'[container_images]\n"{image}" = "localhost/inferd-tenancy-matrix-missing:latest"\n'
    )
    srv.start()
    try:
        alice, bob = new_account(srv, "alice"), new_account(srv, "bob")
        [gpu_config, *_] = alice.get("/v1/containers/params").json()["gpu_configs"]
        created = alice.post(
            "/v1/containers",
            json={"name": "alices", "gpu_config": gpu_config, "container_image": image},
        )
        assert created.status_code == 200, created.text
        container_id = created.json()["container_id"]
        mine = wait_for(
            "Alice's container failed",
            lambda: (
                (c := alice.get(f"/v1/containers/{container_id}").json())["state"] == "failed" and c
            ),
            timeout=30,
        )
        listed = alice.get("/v1/containers", params={"state": "inactive"}).json()
        bob_key = key_of(bob)
        for (method, template), probe in COVERED.items():
            if probe.kind != "container":
                continue
            for credential, status in ((bob_key, 404), (None, 401)):
                r = call(srv, method, template, container_id, probe, credential)
                assert r.status_code == status, (method, template, r.text)
                error_of(r)
                other = unknown("container")
                u = call(srv, method, template, other, probe, credential)
                assert normal(r, container_id) == normal(u, other), (r.text, u.text)
                assert alice.get(f"/v1/containers/{container_id}").json() == mine
        assert alice.get("/v1/containers", params={"state": "inactive"}).json() == listed
        for c in (alice, bob):
            c.close()
    finally:
        srv.stop()
        node = node_name(Settings(home=srv.home))
        listed_ids = subprocess.run(
            ["podman", "ps", "-a", "-q", "--filter", f"label={LABEL_NODE}={node}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert not listed_ids, "a container was made for a missing image"
        table = "inferd_" + bridge.replace("-", "_")
        for family in ("inet", "bridge"):
            subprocess.run(["nft", "delete", "table", family, table], check=False)
        subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)


def test_lists_and_public_routes_show_nothing_of_alices(world: World) -> None:
    """Every GET of the document without a path parameter (the lists, usage, team, health,
    metrics), as Bob and without a credential, names none of Alice's objects."""
    doc = httpx.get(world.server.url + "/openapi.json", timeout=60).json()
    [alice] = [a for a in world.admin.get("/v1/accounts").json() if a["name"] == "alice"]
    hers = {v for values in world.ids.values() for v in values} | {"alice", alice["id"]}
    lists = [p for p, ops in doc["paths"].items() if "get" in ops and "{" not in p]
    assert {"/v1/files", "/deploy/list", "/v1/routes", "/metrics"} <= set(lists)
    problems = []
    for path in lists:
        for who, credential in (("Bob", key_of(world.bob)), ("anyone", None)):
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            r = httpx.get(world.server.url + path, headers=headers, timeout=60)
            if seen := sorted(v for v in hers if v in r.text):
                problems.append(f"{who}: GET {path} shows {seen}")
    assert not problems, "\n".join(problems)
