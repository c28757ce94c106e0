"""Native requests answered by webhook, against a live server and a receiver on loopback that
verifies every delivery with the `standardwebhooks` library."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server, free_port

CANARY = "webhookcanary9Zq"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Receiver:
    """A webhook receiver on loopback: answers with the scripted statuses in turn (then 200)
    and keeps what it got."""

    def __init__(self, port: int | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.received.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait(self, count: int, timeout: float = 20) -> list[tuple[dict[str, str], bytes, int]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} deliveries"
            time.sleep(0.05)
        return self.received


@pytest.fixture(scope="module")
def receiver_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory, receiver_port: int) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("webhooks")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver_port}",
        "INFERD_WEBHOOKS_RETRY_SCHEDULE": "0.3,0.3,0.3",
    }
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture
def receiver(receiver_port: int) -> Iterator[Receiver]:
    r = Receiver(receiver_port)
    yield r
    r.close()


def infer(server: Server, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/inference/{NULL_MODEL}",
        json=body,
        headers=AUTH if headers is None else headers,
        timeout=30,
    )


def secret(server: Server) -> str:
    return httpx.get(server.url + "/v1/webhooks/secret", headers=AUTH).json()["secret"]


def deliveries(server: Server) -> list[dict]:
    return httpx.get(server.url + "/v1/webhooks/deliveries", headers=AUTH).json()["data"]


def test_result_arrives_signed_with_the_synchronous_body(
    hook_server: Server, receiver: Receiver
) -> None:
    body = {"input": f"Say {CANARY}", "max_new_tokens": 4}
    synchronous = infer(hook_server, body).json()
    queued = infer(hook_server, {**body, "webhook": receiver.url})
    assert queued.status_code == 200, queued.text
    answer = queued.json()
    assert answer["inference_status"] == {"status": "queued"}
    [(headers, raw, _)] = receiver.wait(1)
    payload = Webhook(secret(hook_server)).verify(raw, headers)
    assert payload["request_id"] == answer["request_id"]
    assert payload["inference_status"]["status"] == "succeeded"
    assert payload["inference_status"]["cost"] >= 0 and "runtime_ms" in payload["inference_status"]
    # The same shape as the synchronous answer, field for field.
    assert set(payload) == set(synchronous)
    assert payload["results"] == synchronous["results"]
    [listed] = [d for d in deliveries(hook_server) if d["request_id"] == answer["request_id"]]
    assert listed["id"] == headers["webhook-id"]
    assert listed["state"] == "delivered" and listed["attempts"] == 1
    assert listed["last_status"] == 200 and listed["resendable_until"]


def test_retries_until_the_receiver_takes_it_with_the_same_id(
    hook_server: Server, receiver: Receiver
) -> None:
    receiver.script = [500, 500]
    answer = infer(hook_server, {"input": "hi", "webhook": receiver.url}).json()
    got = receiver.wait(3)
    assert [status for _, _, status in got] == [500, 500, 200]
    ids = {headers["webhook-id"] for headers, _, _ in got}
    assert len(ids) == 1
    verifier = Webhook(secret(hook_server))
    for headers, raw, _ in got:
        assert verifier.verify(raw, headers)["request_id"] == answer["request_id"]
    deadline = time.monotonic() + 5
    while True:
        [listed] = [d for d in deliveries(hook_server) if d["id"] in ids]
        if listed["state"] == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert listed["state"] == "delivered" and listed["attempts"] == 3

    # Resent on request: a new round, the same webhook-id.
    resent = httpx.post(
        f"{hook_server.url}/v1/webhooks/deliveries/{listed['id']}/resend", headers=AUTH
    )
    assert resent.status_code == 200, resent.text
    headers, _, _ = receiver.wait(4)[-1]
    assert headers["webhook-id"] == listed["id"]


def test_multipart_requests_take_a_webhook_too(hook_server: Server, receiver: Receiver) -> None:
    queued = httpx.post(
        f"{hook_server.url}/v1/inference/{NULL_MODEL}",
        headers=AUTH,
        files={"input": (None, "hi"), "webhook": (None, receiver.url)},
    )
    assert queued.status_code == 200, queued.text
    [(headers, raw, _)] = receiver.wait(1)
    payload = Webhook(secret(hook_server)).verify(raw, headers)
    assert payload["request_id"] == queued.json()["request_id"]
    assert payload["inference_status"]["status"] == "succeeded"


def test_gone_stops_retries(hook_server: Server, receiver: Receiver) -> None:
    receiver.script = [410]
    answer = infer(hook_server, {"input": "hi", "webhook": receiver.url}).json()
    receiver.wait(1)
    time.sleep(1.5)  # three retry intervals: none comes
    assert len(receiver.received) == 1
    [listed] = [d for d in deliveries(hook_server) if d["request_id"] == answer["request_id"]]
    assert listed["state"] == "failed" and listed["last_status"] == 410


def test_rotation_signs_with_both_secrets(hook_server: Server, receiver: Receiver) -> None:
    old = secret(hook_server)
    rotated = httpx.post(hook_server.url + "/v1/webhooks/secret/rotate", headers=AUTH)
    new = rotated.json()["secret"]
    assert new != old and secret(hook_server) == new
    infer(hook_server, {"input": "hi", "webhook": receiver.url})
    [(headers, raw, _)] = receiver.wait(1)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(old).verify(raw, headers)
    Webhook(new).verify(raw, headers)


def test_cli_prints_and_rotates_the_secret(hook_server: Server) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "inferd", "webhooks", "secret", *args],
            env=hook_server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert cli() == secret(hook_server)
    rotated = cli("--rotate")
    assert rotated.startswith("whsec_") and secret(hook_server) == rotated


def test_refusals(hook_server: Server, receiver: Receiver) -> None:
    streamed = infer(hook_server, {"input": "hi", "stream": True, "webhook": receiver.url})
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "webhook"
    private = infer(hook_server, {"input": "hi", "webhook": "http://10.1.2.3/hook"})
    assert private.status_code == 400 and private.json()["error"]["code"] == "url_not_allowed"
    metadata = infer(hook_server, {"input": "hi", "webhook": "http://169.254.169.254/latest"})
    assert metadata.status_code == 400
    scheme = infer(hook_server, {"input": "hi", "webhook": "file:///etc/passwd"})
    assert scheme.status_code == 400
    unauthenticated = infer(hook_server, {"input": "hi", "webhook": receiver.url}, headers={})
    assert unauthenticated.status_code == 401
    openai = httpx.post(
        hook_server.url + "/v1/openai/chat/completions",
        headers=AUTH,
        json={
            "model": NULL_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "webhook": receiver.url,
        },
    )
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "webhook"
    assert receiver.received == []

    minted = httpx.post(
        hook_server.url + "/v1/scoped-jwt",
        headers=AUTH,
        json={"api_key_name": "auto", "models": [NULL_MODEL]},
    )
    assert minted.status_code == 200, minted.text
    jwt = {"Authorization": f"Bearer {minted.json()['token']}"}
    assert httpx.get(hook_server.url + "/v1/webhooks/secret", headers=jwt).status_code == 403
    rotate = httpx.post(hook_server.url + "/v1/webhooks/secret/rotate", headers=jwt)
    assert rotate.status_code == 403


def test_sigkill_with_deliveries_pending_loses_nothing(
    hook_server: Server, receiver_port: int
) -> None:
    """The receiver is down; the server is killed with SIGKILL while the deliveries wait for
    their retry; restarted, it delivers every one, with the ids it had."""
    answers = [
        infer(
            hook_server,
            {"input": f"{CANARY} {i}", "webhook": f"http://127.0.0.1:{receiver_port}/hook"},
        ).json()
        for i in range(3)
    ]
    wanted = {a["request_id"] for a in answers}
    deadline = time.monotonic() + 10
    while True:  # every request ran; the deliveries failed at least once (connection refused)
        rows = [d for d in deliveries(hook_server) if d["request_id"] in wanted]
        if len(rows) == 3 and all(d["attempts"] >= 1 for d in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    ids = {d["id"] for d in rows}
    hook_server.stop(signal.SIGKILL)
    receiver = Receiver(receiver_port)
    try:
        hook_server.start()
        got = receiver.wait(3, timeout=30)
        assert {headers["webhook-id"] for headers, _, _ in got} == ids
        assert {json.loads(raw)["request_id"] for _, raw, _ in got} == wanted
    finally:
        receiver.close()


def test_no_content_reaches_disk(hook_server: Server) -> None:
    """Runs last in this module: the canary went through webhook requests above."""
    hits = []
    for root in (hook_server.home, hook_server.tmp, hook_server.log_path.parent):
        for path in Path(root).rglob("*"):
            if path.is_file() and CANARY.encode() in path.read_bytes():
                hits.append(str(path))
    assert not hits, hits
    blobs = list((hook_server.home / "blobs").rglob("*"))
    assert blobs or deliveries(hook_server)  # payloads are kept encrypted until purged


def test_queue_bound_and_resend_window(tmp_path: Path, receiver_port: int) -> None:
    """A second server: one waiting webhook request per account at most (the next is a 429
    with Retry-After), and a resend window of 2 s (then the payload is purged: 410)."""
    (tmp_path / "catalog.toml").write_text(
        f'[[models]]\nname = "{NULL_MODEL}"\ntask = "text-generation"\nengine = "null"\n'
        "options = { tokens = 4, token_delay_ms = 300 }\n"
    )
    srv = Server(
        tmp_path,
        {
            "INFERD_ADMIN_KEY": ADMIN_KEY,
            "INFERD_CATALOG": str(tmp_path / "catalog.toml"),
            "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver_port}",
            "INFERD_WEBHOOKS_QUEUE_LIMIT": "1",
            "INFERD_WEBHOOKS_RESEND_WINDOW_S": "2",
        },
    ).start()
    receiver = Receiver(receiver_port)
    try:
        first = infer(srv, {"input": "hi", "webhook": receiver.url})
        assert first.status_code == 200
        second = infer(srv, {"input": "hi", "webhook": receiver.url})
        assert second.status_code == 429, second.text
        assert second.headers["retry-after"] and "waiting" in second.json()["error"]["message"]
        [(headers, _, _)] = receiver.wait(1)
        time.sleep(3)  # the resend window ends; the purge job destroys the payload
        resend = f"{srv.url}/v1/webhooks/deliveries/{headers['webhook-id']}/resend"
        gone = httpx.post(resend, headers=AUTH)
        assert gone.status_code == 410, gone.text
        assert "resend window" in gone.json()["error"]["message"]
        assert not list((srv.home / "blobs").glob("msg_*"))
        missing = httpx.post(f"{srv.url}/v1/webhooks/deliveries/msg_nope/resend", headers=AUTH)
        assert missing.status_code == 404
    finally:
        receiver.close()
        srv.stop()
