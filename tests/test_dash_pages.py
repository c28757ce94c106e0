"""The dashboard's deployments, GPU instances, webhooks and playground pages on a real server,
signed in with an API key as a browser would (the session cookie, CSRF tokens in the forms):
each page renders, every form refuses a post without its token, the deployment forms reach the
registry and the table refreshes until a version settles, terminate wants "confirm" typed, and
the playground streams a reply (or an error chunk) through the serving core."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import yaml

from inferd.api.dash.instances import cloud_config
from inferd.api.dash.render import TEMPLATES
from inferd.control.containers import check_user_data
from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server, sse_events
from tests.hub_double import HubDouble
from tests.test_privacy import CANARY, files_under
from tests.test_webhooks import Receiver

NO_WEIGHTS_REPO = "dash-models/readme-only"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDashboardTestKeyOnly dev@laptop"
PRICED_MODEL = "test/priced-null"
CATALOG = (
    NULL_CATALOG
    + f"""
[[models]]
name = "{PRICED_MODEL}"
task = "text-generation"
engine = "null"
price = {{ per_request = 0.001 }}
"""
)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubDouble]:
    folder = tmp_path_factory.mktemp("readme-only")
    (folder / "README.md").write_text("No weights here.\n")
    with HubDouble() as double:
        double.add_repo(NO_WEIGHTS_REPO, folder)
        yield double


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def dash_server(
    tmp_path_factory: pytest.TempPathFactory, hub: HubDouble, receiver: Receiver
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dash-pages")
    (root / "catalog.toml").write_text(CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_HF_ENDPOINT": hub.url,
        "INFERD_MODEL_CACHE": str(root / "models"),
        "INFERD_RECONCILE_INTERVAL_S": "0.3",
        "INFERD_GPU_QUOTA": "4",
        "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}",
    }
    srv = Server(root, env)
    # An operator's emulated pool (the control plane's tests run A100-80GB on the CPU).
    (srv.home / "config.toml").write_text(
        '[[pools]]\nname = "A100-80GB"\ncount = 2\nusd_per_hour = 72.0\nemulated = true\n'
    )
    srv.start()
    yield srv
    srv.stop()


def new_team(server: Server, name: str, **limits: float) -> str:
    """A team and its bootstrap (admin) API key."""
    created = httpx.post(
        server.url + "/v1/accounts",
        json={"name": name, **limits},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    return created.json()["api_key"]


def browser(server: Server, key: str) -> httpx.Client:
    """A client signed in to the dashboard with `key` (the session cookie it keeps)."""
    b = httpx.Client(base_url=server.url, timeout=60)
    signed_in = b.post("/login", data={"api_key": key})
    assert signed_in.status_code == 303 and signed_in.headers["location"].endswith("/dash")
    assert "inferd_session" in b.cookies
    return b


def csrf(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:2000]
    return match.group(1)


@pytest.fixture(scope="module")
def key(dash_server: Server) -> str:
    return new_team(dash_server, "dashco")


@pytest.fixture(scope="module")
def b(dash_server: Server, key: str) -> Iterator[httpx.Client]:
    with closing(browser(dash_server, key)) as client:
        yield client


@pytest.fixture(scope="module")
def api(dash_server: Server, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=dash_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client


# -- pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/dash/deployments", 200, ['<table id="deployments"', "Custom LLM", "LoRA model"]),
        ("/dash/instances", 503, ["GPU containers are unavailable", '<table id="containers"']),
        ("/dash/webhooks", 200, ["Show the signing secret", '<table id="deliveries"']),
        ("/dash/playground", 200, ['<form id="playground"', f">{NULL_MODEL}<"]),
    ],
)
def test_pages_render(b: httpx.Client, path: str, status: int, expected: list[str]) -> None:
    page = b.get(path)
    assert page.status_code == status, page.text[:2000]
    for text in expected:
        assert text in page.text
    assert f'<a href="{path}" aria-current="page">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # Accessible markup: every input labelled, column headers scoped.
    ids = set(re.findall(r'<label[^>]* for="([^"]+)"', page.text))
    for field in re.findall(r"<(?:input|select|textarea)\b[^>]*>", page.text):
        if 'type="hidden"' in field:
            continue
        field_id = re.search(r'id="([^"]+)"', field)
        assert field_id and field_id.group(1) in ids, field
    assert "<th>" not in page.text


PAGES = (
    "/dash/deployments",
    "/dash/deployments/table",
    "/dash/instances",
    "/dash/instances/table",
    "/dash/webhooks",
    "/dash/webhooks/table",
    "/dash/playground",
)


def test_pages_want_a_session(dash_server: Server) -> None:
    for path in PAGES:
        r = httpx.get(dash_server.url + path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


POSTS = [
    ("/dash/deployments/llm", {"model_name": "x", "gpu": "A100-80GB", "hf_repo": "a/b"}),
    ("/dash/deployments/lora", {"lora_model_name": "x", "hf_model_name": "a/b"}),
    ("/dash/deployments/0123/scale", {"min_instances": "0", "max_instances": "1"}),
    ("/dash/deployments/0123/stop", {}),
    ("/dash/deployments/0123/start", {}),
    ("/dash/deployments/0123/delete", {}),
    ("/dash/instances", {"name": "x", "gpu_config": "1xA100-80GB", "ssh_key": SSH_KEY}),
    ("/dash/instances/ctr-0123/terminate", {"confirm": "confirm"}),
    ("/dash/webhooks/secret", {}),
    ("/dash/webhooks/secret/rotate", {}),
    ("/dash/webhooks/deliveries/whd_0123/resend", {}),
    ("/dash/playground/chat", {"model": NULL_MODEL, "prompt": "hi"}),
]


@pytest.mark.parametrize(("path", "fields"), POSTS)
def test_forms_want_the_csrf_token(b: httpx.Client, path: str, fields: dict[str, str]) -> None:
    for token in (None, "forged-token"):
        data = fields if token is None else {**fields, "csrf": token}
        r = b.post(path, data=data)
        assert r.status_code == 403, (path, r.status_code, r.text[:500])
        assert "did not come from this dashboard" in r.text
        assert 'role="alert"' in r.text


# -- deployments ----------------------------------------------------------------------------------


def test_deploy_a_custom_llm_and_watch_it_settle(b: httpx.Client, api: httpx.Client) -> None:
    page = b.get("/dash/deployments?new=custom-llm")
    assert '<details id="custom-llm" open>' in page.text
    assert "A100-80GB — $72.00 per GPU-hour — 2 of 2 free (emulated)" in page.text
    token = csrf(page)
    created = b.post(
        "/dash/deployments/llm",
        data={
            "csrf": token,
            "model_name": "dash-llm",
            "gpu": "A100-80GB",
            "hf_repo": NO_WEIGHTS_REPO,
            "hf_revision": "",
            "min_instances": "0",
            "max_instances": "2",
        },
    )
    assert created.status_code == 200, created.text[:2000]
    assert "version 1 is being deployed" in created.text
    [version] = [d for d in api.get("/deploy/list").json() if d["model_name"].endswith("/dash-llm")]
    assert version["config"]["hf_repo"] == NO_WEIGHTS_REPO
    assert version["settings"]["max_instances"] == 2
    deploy_id = version["deploy_id"]
    assert f'id="deploy-{deploy_id}"' in created.text
    # Seen as it was when the page rendered; the registry starts every version there.
    shown = re.search(rf'id="deploy-{deploy_id}"[^>]*data-status="([a-z]+)"', created.text)
    assert shown and shown.group(1) in ("initializing", "downloading", "failed")

    # The table fragment the page polls: just the table, pending until the version settles
    # (the repository has no weights, so it fails, with the reason shown).
    deadline = time.monotonic() + 90
    while True:
        fragment = b.get("/dash/deployments/table")
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert fragment.text.lstrip().startswith('<table id="deployments"')
        if 'data-status="failed"' in fragment.text:
            break
        assert 'data-pending="true"' in fragment.text
        assert time.monotonic() < deadline, fragment.text
        time.sleep(0.5)
    assert 'data-pending="true"' not in fragment.text
    assert 'class="reason failed"' in fragment.text
    assert api.get(f"/deploy/{deploy_id}").json()["fail_reason"]

    # Scale it, start it again (a retry), then delete it.
    scaled = b.post(
        f"/dash/deployments/{deploy_id}/scale",
        data={"csrf": token, "min_instances": "0", "max_instances": "1"},
    )
    assert scaled.status_code == 200 and "now runs 0-1 instances" in scaled.text
    assert api.get(f"/deploy/{deploy_id}").json()["settings"]["max_instances"] == 1
    started = b.post(f"/dash/deployments/{deploy_id}/start", data={"csrf": token})
    assert started.status_code == 200 and "is starting" in started.text
    deleted = b.post(f"/dash/deployments/{deploy_id}/delete", data={"csrf": token})
    assert deleted.status_code == 200 and "was deleted" in deleted.text
    deadline = time.monotonic() + 30
    while api.get(f"/deploy/{deploy_id}").status_code != 404:  # deleted
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert f'id="deploy-{deploy_id}"' not in b.get("/dash/deployments/table").text


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"model_name": "bad name!"}, 400, "`model_name` must be"),
        ({"gpu": "Z9-1GB"}, 400, "Z9-1GB"),
        (
            {"min_instances": "3", "max_instances": "1"},
            400,
            "max_instances must be at least min_instances",
        ),
        ({"max_instances": "5"}, 403, "GPU quota exceeded"),
        ({"hf_repo": ""}, 400, "`hf.repo`"),
    ],
)
def test_deploy_form_errors_are_shown(
    b: httpx.Client, fields: dict[str, str], status: int, message: str
) -> None:
    token = csrf(b.get("/dash/deployments"))
    data = {
        "csrf": token,
        "model_name": "errs",
        "gpu": "A100-80GB",
        "hf_repo": NO_WEIGHTS_REPO,
        **fields,
    }
    r = b.post("/dash/deployments/llm", data=data)
    assert (r.status_code, message in r.text) == (status, True), r.text[:3000]
    assert '<div class="notice error" role="alert">' in r.text
    assert '<details id="custom-llm" open>' in r.text


def test_lora_form_shows_why_an_adapter_cannot_be_used(b: httpx.Client) -> None:
    token = csrf(b.get("/dash/deployments"))
    r = b.post(
        "/dash/deployments/lora",
        data={"csrf": token, "lora_model_name": "my-lora", "hf_model_name": NO_WEIGHTS_REPO},
    )
    assert r.status_code == 400
    assert "holds no weights inferd can load" in r.text and '<details id="lora" open>' in r.text
    other = b.post(
        "/dash/deployments/lora",
        data={"csrf": token, "lora_model_name": "someone/x", "hf_model_name": NO_WEIGHTS_REPO},
    )
    assert other.status_code == 400 and "start with your owner" in other.text


def test_actions_on_unknown_deployments_are_not_found(b: httpx.Client) -> None:
    token = csrf(b.get("/dash/deployments"))
    for action in ("stop", "start", "delete"):
        r = b.post(f"/dash/deployments/nope{action}/{action}", data={"csrf": token})
        assert r.status_code == 404 and 'role="alert"' in r.text


# -- GPU instances ----------------------------------------------------------------------------


def test_instances_unavailable_and_terminate_wants_confirm(b: httpx.Client) -> None:
    page = b.get("/dash/instances")
    assert page.status_code == 503
    assert "GPU containers are off on this server" in page.text
    assert 'action="/dash/instances"' not in page.text  # no create form without containers
    token = csrf(page)
    created = b.post(
        "/dash/instances",
        data={
            "csrf": token,
            "name": "box",
            "gpu_config": "1xA100-80GB",
            "container_image": "x",
            "ssh_key": SSH_KEY,
        },
    )
    assert created.status_code == 503 and "GPU containers are off" in created.text
    for typed in (None, "", "Confirm", "confirm please"):
        data = {"csrf": token} if typed is None else {"csrf": token, "confirm": typed}
        refused = b.post("/dash/instances/ctr-0123/terminate", data=data)
        assert refused.status_code == 400
        assert "Type &#34;confirm&#34; to terminate" in refused.text
    unknown = b.post(
        "/dash/instances/ctr-0123/terminate", data={"csrf": token, "confirm": "confirm"}
    )
    assert unknown.status_code == 404 and "No container `ctr-0123`" in unknown.text


def test_ssh_key_becomes_the_ubuntu_users_cloud_config() -> None:
    user_data = cloud_config(SSH_KEY + "\n\n" + SSH_KEY.replace("dev@", "ops@") + "\n")
    assert user_data.startswith("#cloud-config\n")
    check_user_data(user_data)  # what the container manager accepts
    [user] = yaml.safe_load(user_data)["users"]
    assert user["name"] == "ubuntu" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [SSH_KEY, SSH_KEY.replace("dev@", "ops@")]
    for bad in ("", "   \n", "-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-rsa"):
        with pytest.raises(ValueError):
            cloud_config(bad)
    # Whatever a key line holds stays one YAML string (no injected keys).
    tricky = "ssh-ed25519 AAAA x\nruncmd: [reboot]"
    with pytest.raises(ValueError):
        cloud_config(tricky)
    quoted = cloud_config("ssh-ed25519 AAAA a: b # c")
    assert yaml.safe_load(quoted)["users"][0]["ssh_authorized_keys"] == [
        "ssh-ed25519 AAAA a: b # c"
    ]


def test_running_container_row_has_the_ssh_login_and_escapes_names() -> None:
    """The table as it renders once a container runs (podman is not needed to see it)."""
    page = TEMPLATES.get_template("instances.html")
    row = {
        "id": "ctr-1",
        "name": "<b>box</b>",
        "state": "running",
        "ip": "10.88.0.5",
        "gpu_config": "1xA100-80GB",
        "price_per_hour": 72.0,
        "container_image": "ubuntu:24.04",
        "fail_reason": None,
    }
    failed = {**row, "id": "ctr-2", "state": "failed", "ip": None, "fail_reason": "<oops>"}
    context = page.new_context({"csrf": "t", "rows": [row, failed], "moving": False})
    html = "".join(page.blocks["table"](context))
    assert '<code id="ssh-ctr-1">ssh ubuntu@10.88.0.5</code>' in html
    assert 'data-copy="ssh-ctr-1"' in html and 'data-copy="ssh-ctr-2"' not in html
    assert "<b>box</b>" not in html and "&lt;b&gt;box&lt;/b&gt;" in html
    assert "&lt;oops&gt;" in html and 'class="reason failed"' in html
    assert html.count('data-confirm="confirm"') == 2 and "data-pending" not in html
    moving = page.new_context({"csrf": "t", "rows": [{**row, "state": "starting"}], "moving": True})
    assert 'data-pending="true"' in "".join(page.blocks["table"](moving))


# -- webhooks -------------------------------------------------------------------------------------


def test_webhook_secret_show_and_rotate(b: httpx.Client, api: httpx.Client) -> None:
    page = b.get("/dash/webhooks")
    assert "whsec_" not in page.text  # shown only when asked
    token = csrf(page)
    shown = b.post("/dash/webhooks/secret", data={"csrf": token})
    assert shown.status_code == 200
    secret = api.get("/v1/webhooks/secret").json()["secret"]
    assert f'<div class="secret" id="webhook-secret">{secret}</div>' in shown.text
    assert 'data-copy="webhook-secret"' in shown.text
    rotated = b.post("/dash/webhooks/secret/rotate", data={"csrf": token})
    assert rotated.status_code == 200 and "old one keeps signing" in rotated.text
    fresh = api.get("/v1/webhooks/secret").json()["secret"]
    assert fresh != secret and fresh in rotated.text
    missing = b.post("/dash/webhooks/deliveries/whd_nope/resend", data={"csrf": token})
    assert missing.status_code == 404 and "No delivery" in missing.text
    table = b.get("/dash/webhooks/table")
    assert table.text.lstrip().startswith('<table id="deliveries"')


def test_delivery_log_and_resend(b: httpx.Client, api: httpx.Client, receiver: Receiver) -> None:
    queued = api.post(f"/v1/inference/{NULL_MODEL}", json={"input": "hi", "webhook": receiver.url})
    assert queued.status_code == 200, queued.text
    # The log refreshes itself until the delivery settles.
    deadline = time.monotonic() + 30
    while 'data-state="delivered"' not in (table := b.get("/dash/webhooks/table")).text:
        assert time.monotonic() < deadline, table.text
        time.sleep(0.3)
    assert 'data-pending="true"' not in table.text and "HTTP 200" in table.text
    [delivery_id] = re.findall(r'id="delivery-([^"]+)"', table.text)
    first = receiver.wait(1)[0][0]["webhook-id"]
    assert first == delivery_id
    page = b.get("/dash/webhooks")
    assert f'aria-label="Resend delivery {delivery_id}"' in page.text
    resent = b.post(f"/dash/webhooks/deliveries/{delivery_id}/resend", data={"csrf": csrf(page)})
    assert resent.status_code == 200 and "is being sent again" in resent.text
    assert receiver.wait(2)[1][0]["webhook-id"] == delivery_id


def test_members_cannot_rotate_the_webhook_secret(dash_server: Server) -> None:
    new_team(dash_server, "memberco")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "inferd", *args],
            env=dash_server.env,
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent.parent,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    cli("teams", "add-member", "memberco", "bob@memberco.test")
    member_key = cli("teams", "key", "memberco", "bob@memberco.test", "--name", "bob")
    with closing(browser(dash_server, member_key)) as member:
        page = member.get("/dash/webhooks")
        assert page.status_code == 200 and "Rotate the secret" not in page.text
        r = member.post("/dash/webhooks/secret/rotate", data={"csrf": csrf(page)})
        assert r.status_code == 403 and "Only a team admin may rotate" in r.text
        assert member.post("/dash/webhooks/secret", data={"csrf": csrf(page)}).status_code == 200


# -- playground -----------------------------------------------------------------------------------


def chunks(response: httpx.Response) -> list[dict]:
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_playground_streams_a_reply(b: httpx.Client, api: httpx.Client) -> None:
    token = csrf(b.get("/dash/playground"))
    before = api.get("/v1/usage").json()["total_requests"]
    with b.stream(
        "POST",
        "/dash/playground/chat",
        data={"csrf": token, "model": NULL_MODEL, "prompt": "Say hello.", "max_tokens": "8"},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = chunks(r)
    assert all(c["object"] == "chat.completion.chunk" for c in got)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in got)
    assert text == "ok"
    assert got[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # Billed like an API call, to the team (the usage ledger).
    deadline = time.monotonic() + 10
    while api.get("/v1/usage").json()["total_requests"] == before:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_playground_prompts_reach_no_disk_or_log(
    dash_server: Server, b: httpx.Client, api: httpx.Client
) -> None:
    token = csrf(b.get("/dash/playground"))
    for model in (NULL_MODEL, "no/such-model"):  # an answer, and an error chunk
        r = b.post(
            "/dash/playground/chat",
            data={"csrf": token, "model": model, "prompt": f"remember {CANARY}", "max_tokens": "8"},
        )
        assert r.status_code == 200 and chunks(r)
    time.sleep(0.5)  # the ledger's flush
    hits = [
        str(path)
        for root in (dash_server.home, dash_server.tmp, dash_server.log_path.parent)
        for path in files_under(root)
        if CANARY.encode() in path.read_bytes()
    ]
    assert not hits, hits


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "no/such-model"}, "does not exist"),
        ({"prompt": "  "}, "Write a prompt first"),
        ({"max_tokens": "0"}, "`max_tokens`"),
        ({"max_tokens": "lots"}, "`max_tokens`"),
    ],
)
def test_playground_refusals_are_error_chunks(
    b: httpx.Client, fields: dict[str, str], message: str
) -> None:
    token = csrf(b.get("/dash/playground"))
    data = {"csrf": token, "model": NULL_MODEL, "prompt": "hi", **fields}
    r = b.post("/dash/playground/chat", data=data)
    assert r.status_code == 200
    [error] = chunks(r)
    assert message in error["error"]["message"]


def test_playground_over_the_spending_limit_is_a_402_chunk(dash_server: Server) -> None:
    key = new_team(dash_server, "brokeco", spending_limit=0.0)
    with closing(browser(dash_server, key)) as broke:
        token = csrf(broke.get("/dash/playground"))
        r = broke.post(
            "/dash/playground/chat", data={"csrf": token, "model": PRICED_MODEL, "prompt": "hi"}
        )
        assert r.status_code == 200
        [error] = chunks(r)
        assert error["error"]["type"] == "insufficient_quota"
        assert "spending limit" in error["error"]["message"].lower()
