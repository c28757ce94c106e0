"""The webhook sender's building blocks: Standard Webhooks signatures (checked by the reference
`standardwebhooks` verifier), delivery attempts against real receivers on loopback (plain HTTP
and TLS), the address policy at submit and at send time, and the retry policy."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from inferd import netguard
from inferd.jobs.webhooks import delivery, signing
from inferd.jobs.webhooks.delivery import (
    AttemptResult,
    DeliveryPolicy,
    RetryPolicy,
    URLRejected,
    attempt,
    check_url,
    parse_retry_after,
)

BODY = json.dumps(
    {"request_id": "R7X9fdlIaF5GlVisBAi5xR3E", "inference_status": {"status": "succeeded"}},
    ensure_ascii=False,
).encode()


# --- a receiver on loopback -------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP(S) server that answers POSTs with a script of replies and records each request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.server_names: list[str | None] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                reply = receiver.script.pop(0) if receiver.script else Reply()
                time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *_: None  # type: ignore[method-assign]  # client gone
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def policy_for(*ports: int, timeout_s: float = 5.0, host: str = "127.0.0.1") -> DeliveryPolicy:
    allowed = ",".join(f"{host}:{p}" for p in ports)
    return DeliveryPolicy(allow_hosts=netguard.parse_allow_hosts(allowed), timeout_s=timeout_s)


def send(url: str, policy: DeliveryPolicy, secrets: list[str], msg_id: str = "msg_1"):
    async def go() -> AttemptResult:
        async with delivery.new_client() as client:
            hdrs = signing.headers(msg_id, int(time.time()), BODY, secrets)
            return await attempt(client, url, BODY, hdrs, policy)

    return asyncio.run(go())


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names under .test (reserved, never real) answer from this table, in turn per lookup.

    Standing in for a DNS server we cannot run here; every other name resolves for real."""
    answers: dict[str, list[str]] = {}
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(host, str) and host in answers:
            address = answers[host].pop(0)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return answers


# --- signatures -------------------------------------------------------------------------------


def test_secrets_have_the_standard_form() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 32
    assert len(base64.b64decode(secret[6:], validate=True)) == 24
    assert signing.new_secret() != secret
    # The prefix and the padding are optional, as for the reference verifier.
    raw = base64.b64encode(b"k" * 32).decode()
    assert signing.secret_key(raw) == signing.secret_key("whsec_" + raw.rstrip("=")) == b"k" * 32
    for bad in ("whsec_", "whsec_not base64!"):
        with pytest.raises(ValueError):
            signing.secret_key(bad)


def test_signatures_verify_with_the_reference_library() -> None:
    secret = signing.new_secret()
    now = int(time.time())
    body = json.dumps({"text": "héllo ✓", "n": 1}, ensure_ascii=False).encode()
    hdrs = signing.headers("msg_2Zx", now, body, [secret])
    assert set(hdrs) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert hdrs["webhook-timestamp"] == str(now) and hdrs["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, hdrs) == {"text": "héllo ✓", "n": 1}
    # The same bytes the library would sign.
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    assert signing.sign(secret, "msg_2Zx", now, body) == Webhook(secret).sign(
        "msg_2Zx", when, body.decode()
    )
    for tampered in (
        (body.replace(b"1", b"2"), hdrs),
        (body, {**hdrs, "webhook-id": "msg_other"}),
        (body, {**hdrs, "webhook-timestamp": str(now + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(*tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, hdrs)
    stale = signing.headers("msg_2Zx", now - 3600, body, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)  # why every retry is signed afresh


def test_rotation_sends_both_signatures_and_either_secret_verifies() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    hdrs = signing.headers("msg_rot", int(time.time()), BODY, [old, new])
    assert len(hdrs["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(BODY, hdrs) and Webhook(new).verify(BODY, hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, hdrs)


def test_bad_signing_inputs_are_refused() -> None:
    secret = signing.new_secret()
    for msg_id in ("", "msg 1", "msg\r\nX-Injected: 1"):
        with pytest.raises(ValueError):
            signing.headers(msg_id, 1, BODY, [secret])
    with pytest.raises(ValueError):
        signing.headers("msg_1", 1, BODY, [])


# --- attempts against a real receiver ---------------------------------------------------------


def test_failures_then_success_classify_and_carry_the_same_id(receiver: Receiver) -> None:
    receiver.script = [Reply(500, {"Set-Cookie": "session=1; Path=/"}), Reply(500), Reply(200)]
    secret = signing.new_secret()
    url = f"http://127.0.0.1:{receiver.port}/hooks/inferd?x=1"
    policy = policy_for(receiver.port)
    retry = RetryPolicy([5, 300, 1800], jitter=0)

    async def three_attempts() -> list[AttemptResult]:
        async with delivery.new_client() as client:  # one client, as a worker shares it
            return [
                await attempt(
                    client,
                    url,
                    BODY,
                    signing.headers("msg_same", int(time.time()), BODY, [secret]),
                    policy,
                )
                for _ in range(3)
            ]

    results = asyncio.run(three_attempts())
    assert [r.status_code for r in results] == [500, 500, 200]
    assert [r.delivered for r in results] == [False, False, True]
    assert all(r.error is None and r.latency_ms > 0 for r in results)
    assert [retry.after(n, r) for n, r in enumerate(results, 1)] == [5, 300, None]
    assert len(receiver.received) == 3
    for got in receiver.received:
        assert got.path == "/hooks/inferd?x=1" and got.body == BODY
        assert got.headers["webhook-id"] == "msg_same"
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert "Cookie" not in got.headers  # receivers' cookies are never kept
        assert Webhook(secret).verify(got.body, got.headers) is not None


def test_gone_stops_retries(receiver: Receiver) -> None:
    receiver.script = [Reply(410)]
    result = send(f"http://127.0.0.1:{receiver.port}/", policy_for(receiver.port), ["whsec_a2V5"])
    assert result.status_code == 410 and not result.retryable
    assert RetryPolicy().after(1, result) is None
    assert RetryPolicy().next_delay(1, status=410) is None


def test_retry_after_is_honoured_in_both_forms(receiver: Receiver) -> None:
    future = email.utils.formatdate(time.time() + 90, usegmt=True)
    receiver.script = [
        Reply(503, {"Retry-After": "120"}),
        Reply(429, {"Retry-After": future}),
        Reply(503, {"Retry-After": "999999999999"}),
        Reply(200, {"Retry-After": "120"}),
    ]
    url, policy = f"http://127.0.0.1:{receiver.port}/", policy_for(receiver.port)
    first, second, huge, ok = (send(url, policy, ["whsec_a2V5"]) for _ in range(4))
    assert first.retry_after == 120
    assert second.retry_after is not None and 80 < second.retry_after <= 90
    assert huge.retry_after == delivery.MAX_RETRY_AFTER_S
    assert ok.delivered and ok.retry_after is None  # only a failure asks us to wait
    retry = RetryPolicy([5, 300, 1800], jitter=0)
    assert retry.after(1, first) == 120  # longer than the scheduled 5 s: wait longer
    assert retry.after(2, first) == 300  # shorter than the schedule: the schedule stands
    assert retry.after(1, huge) == 1800  # capped at the schedule's longest step
    assert retry.after(4, first) is None  # and it adds no attempts


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script = [Reply(307, {"Location": "/elsewhere"})]
    result = send(
        f"http://127.0.0.1:{receiver.port}/hook", policy_for(receiver.port), ["whsec_a2V5"]
    )
    assert result.status_code == 307 and not result.delivered and result.retryable
    assert [r.path for r in receiver.received] == ["/hook"]


def test_timeout_and_refused_connection_are_retryable(receiver: Receiver) -> None:
    receiver.script = [Reply(200, delay_s=2.0)]
    policy = policy_for(receiver.port, timeout_s=0.3)
    slow = send(f"http://127.0.0.1:{receiver.port}/", policy, ["whsec_a2V5"])
    assert slow.error == delivery.TIMEOUT and slow.status_code is None and slow.retryable
    assert slow.latency_ms < 1500
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = send(f"http://127.0.0.1:{closed}/", policy_for(closed), ["whsec_a2V5"])
    assert refused.error == delivery.CONNECT_ERROR and refused.retryable
    assert RetryPolicy([5], jitter=0).after(1, refused) == 5


def test_internal_address_is_refused_at_send_time(
    receiver: Receiver, fake_dns: dict[str, list[str]]
) -> None:
    # Public at submit, loopback now (a rebinding name): nothing is sent, and it is retried.
    fake_dns["hooks.test"] = ["127.0.0.1"]
    result = send(f"http://hooks.test:{receiver.port}/", DeliveryPolicy(), ["whsec_a2V5"])
    assert result.error == delivery.URL_NOT_ALLOWED and result.retryable
    assert receiver.received == []
    direct = send("http://169.254.169.254/latest/meta-data", DeliveryPolicy(), ["whsec_a2V5"])
    assert direct.error == delivery.URL_NOT_ALLOWED


def test_connection_goes_to_the_checked_address(
    receiver: Receiver, fake_dns: dict[str, list[str]]
) -> None:
    # The name is resolved once per attempt; a second lookup would get a dead private address.
    fake_dns["rebind.test"] = ["127.0.0.1", "10.255.255.1"]
    policy = policy_for(receiver.port, host="rebind.test", timeout_s=2)
    result = send(f"http://rebind.test:{receiver.port}/h", policy, ["whsec_a2V5"])
    assert result.delivered
    assert fake_dns["rebind.test"] == ["10.255.255.1"]  # one lookup
    assert receiver.received[0].headers["Host"] == f"rebind.test:{receiver.port}"


def test_https_keeps_the_name_for_sni_and_certificate(
    tmp_path: Path, fake_dns: dict[str, list[str]]
) -> None:
    cert, key = self_signed(tmp_path, "hooks.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    tls_receiver = Receiver(server_tls)
    try:
        fake_dns["hooks.test"] = ["127.0.0.1"]
        policy = policy_for(tls_receiver.port, host="hooks.test")
        url = f"https://hooks.test:{tls_receiver.port}/secure"

        async def go() -> AttemptResult:
            trust = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
                return await attempt(client, url, BODY, {}, policy)

        result = asyncio.run(go())
        # The certificate names hooks.test only: checked against the IP, it would fail.
        assert result.delivered, result
        assert tls_receiver.server_names == ["hooks.test"]
        assert tls_receiver.received[0].headers["Host"] == f"hooks.test:{tls_receiver.port}"
    finally:
        tls_receiver.close()


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_urls_stay_out_of_logs(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script = [Reply(200), Reply(500, {"Retry-After": "3"})]
    url = f"http://127.0.0.1:{receiver.port}/hooks/s3cr3t-path?token=t0ps3cret"
    policy = policy_for(receiver.port)
    assert send(url, policy, ["whsec_a2V5"]).delivered
    assert send(url, policy, ["whsec_a2V5"]).status_code == 500
    assert send("http://10.0.0.1/s3cr3t-path", policy, ["whsec_a2V5"]).error
    assert any(r.name == "inferd.jobs.webhooks.delivery" for r in caplog.records)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in ("s3cr3t", "t0ps3cret", f"127.0.0.1:{receiver.port}", f"port={receiver.port}"):
        assert secret not in logged
    # The capture would have seen them: outside an attempt httpx logs the URL as usual.
    caplog.clear()
    httpx.get(url, trust_env=False)
    assert any("s3cr3t" in r.getMessage() for r in caplog.records)


# --- the address policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/",  # loopback, another port than the allowed one
        "http://127.0.0.2/",
        "http://2130706433/",  # 127.0.0.1 written as a number
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://100.100.100.200/",  # Alibaba metadata (shared address space)
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[::ffff:a00:1]/",  # IPv4-mapped 10.0.0.1
        "http://[fd00::1]/",
        "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
        "http://[fe80::1]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://0.0.0.0/",
        "http://[::]/",
        "https://224.0.0.1/",
    ],
)
def test_internal_addresses_are_refused_at_submit(url: str, receiver: Receiver) -> None:
    with pytest.raises(URLRejected) as exc:
        asyncio.run(check_url(url, policy_for(receiver.port)))
    assert exc.value.code == delivery.URL_NOT_ALLOWED
    assert url.split("/")[2] not in str(exc.value)  # the reason names a category, not the host


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "http:///nohost",
        "http://user:pw@127.0.0.1:{port}/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:{port}/a b",
        "http://" + "a" * 64 + ".example/",
        "http://127.0.0.1:{port}/" + "x" * 3000,
    ],
)
def test_malformed_urls_are_refused(url: str, receiver: Receiver) -> None:
    with pytest.raises(URLRejected) as exc:
        asyncio.run(check_url(url.format(port=receiver.port), policy_for(receiver.port)))
    assert exc.value.code == delivery.INVALID_URL
    result = send(url.format(port=receiver.port), policy_for(receiver.port), ["whsec_a2V5"])
    assert result.error == delivery.INVALID_URL and not result.retryable


def test_only_allow_listed_host_and_port_are_exempt(receiver: Receiver) -> None:
    policy = policy_for(receiver.port)
    asyncio.run(check_url(f"http://127.0.0.1:{receiver.port}/hook", policy))
    asyncio.run(check_url(f"https://127.0.0.1:{receiver.port}/hook", policy))
    with pytest.raises(URLRejected):
        asyncio.run(check_url(f"http://127.0.0.1:{receiver.port + 1}/", policy))
    with pytest.raises(URLRejected):
        asyncio.run(check_url(f"http://127.0.0.1:{receiver.port}/", DeliveryPolicy()))
    assert netguard.exempt("::1", 8080, netguard.parse_allow_hosts(" [::1]:8080 ,"))
    assert netguard.parse_allow_hosts("Hooks.Example:443, ,") == {"hooks.example:443"}


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),
        ("fd00:ec2::254", "private"),
        ("100.100.100.200", "not globally routable"),
        ("192.0.0.192", "reserved"),
        ("168.63.129.16", "cloud metadata"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        ("fec0::1", "private"),  # site-local, deprecated
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_address_policy(address: str, reason: str | None) -> None:
    assert netguard.refusal(ipaddress.ip_address(address)) == reason


def test_unresolvable_hosts() -> None:
    with pytest.raises(netguard.HostUnresolvable):
        asyncio.run(netguard.checked_address("a" * 64 + ".example", 80))


# --- the retry policy -------------------------------------------------------------------------


def test_default_schedule_and_parsing() -> None:
    default = RetryPolicy(jitter=0)
    delays = [default.next_delay(n) for n in range(1, 8)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, None]
    assert RetryPolicy.parse(delivery.DEFAULT_SCHEDULE_TEXT).schedule == default.schedule
    assert RetryPolicy.parse(" 5, 300 ,1800.5").schedule == (5.0, 300.0, 1800.5)
    assert RetryPolicy.parse("").next_delay(1) is None  # no retries
    for bad in ("5,soon", "5,-1", "nan", "inf"):
        with pytest.raises(ValueError):
            RetryPolicy.parse(bad)
    with pytest.raises(ValueError):
        default.next_delay(0)


def test_jitter_stays_within_bounds_and_varies() -> None:
    retry = RetryPolicy([100, 1000], jitter=0.1, rng=random.Random(7))
    firsts = [retry.next_delay(1) for _ in range(200)]
    assert all(90 <= d <= 110 for d in firsts if d is not None)
    assert len(set(firsts)) > 100
    # Jitter never brings a wait below the receiver's Retry-After.
    assert all((retry.next_delay(1, 105) or 0) >= 105 for _ in range(200))


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30") == 30
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now) == 60
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0
    assert parse_retry_after("9" * 5000) == delivery.MAX_RETRY_AFTER_S
    for junk in (None, "", "-5", "1.5", "soon", "Mon, 99 Foo 2024"):
        assert parse_retry_after(junk) is None
