"""The concurrency limit is exact across gateway processes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

import httpx
import pytest
import redis

from tests.conftest import ADMIN_KEY, Server, free_port
from tests.test_tenancy import POSTGRES_URL, REDIS_URL, reset_postgres, services_available

SLOW = "test/slow-stream"
CATALOG = f"""
[[models]]
name = "{SLOW}"
task = "text-generation"
engine = "null"
options = {{ tokens = 60, token_delay_ms = 100 }}
"""


@pytest.fixture
def two_gateways(tmp_path):
    if not services_available():
        if os.environ.get("CI"):
            pytest.fail("CI requires PostgreSQL and Redis on 127.0.0.1")
        pytest.skip("PostgreSQL or Redis not reachable")
    reset_postgres()
    prefix = f"cluster-{secrets.token_hex(4)}"
    (tmp_path / "catalog.toml").write_text(CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(tmp_path / "catalog.toml"),
        "INFERD_DATABASE_URL": POSTGRES_URL,
        "INFERD_REDIS_URL": REDIS_URL,
        "INFERD_REDIS_PREFIX": prefix,
    }
    first = Server(tmp_path / "a", env).start(timeout=60)
    second = Server(tmp_path / "b", {**env, "INFERD_HOME": str(first.home)}).start(timeout=60)
    yield first, second, prefix
    first.stop()
    second.stop()


def test_300_streams_two_gateways_limit_200(two_gateways) -> None:
    first, second, prefix = two_gateways
    assert_limit_exact(first, second, prefix, SLOW)


def assert_limit_exact(first: Server, second: Server, prefix: str, model: str) -> None:
    """300 streams of one account (limit 200) through two gateways: exactly 200 run, 100 get
    429, none is lost, the slots in Redis never pass 200, and another account is unhurt."""
    accounts = []
    with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        for name in ("storm", "bystander"):
            r = c.post("/v1/accounts", json={"name": f"{name}-{prefix}", "concurrency_limit": 200})
            accounts.append((r.json()["id"], r.json()["api_key"]))
    (storm_id, storm_key), (_, bystander_key) = accounts
    counter = redis.Redis.from_url(REDIS_URL)
    slots_key = f"{prefix}:inflight:{storm_id}:{model}"
    peak = 0
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}

    async def stream(client: httpx.AsyncClient, key: str) -> tuple[int, bool]:
        async with client.stream(
            "POST",
            "/v1/openai/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            if r.status_code != 200:
                await r.aread()
                return r.status_code, False
            lines = [line async for line in r.aiter_lines() if line]
            return 200, lines[-1] == "data: [DONE]"

    async def sample(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            counter.zremrangebyscore(slots_key, "-inf", time.time())
            peak = max(peak, counter.zcard(slots_key))
            await asyncio.sleep(0.05)

    async def run() -> tuple[list, list]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=120, limits=limits) as a,
            httpx.AsyncClient(base_url=second.url, timeout=120, limits=limits) as b,
        ):
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(stop))
            storm = [asyncio.create_task(stream(a if i % 2 else b, storm_key)) for i in range(300)]
            await asyncio.sleep(1.0)
            bystanders = await asyncio.gather(*(stream(a, bystander_key) for _ in range(10)))
            results = await asyncio.gather(*storm)
            stop.set()
            await sampler
            return results, bystanders

    results, bystanders = asyncio.run(run())
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 200, sorted(set(statuses))
    assert statuses.count(429) == 100
    assert all(complete for status, complete in results if status == 200), "a stream was lost"
    assert peak <= 200
    assert all(status == 200 and complete for status, complete in bystanders)
    # Every slot came back.
    counter.zremrangebyscore(slots_key, "-inf", time.time())
    assert counter.zcard(slots_key) == 0


def test_revocation_reaches_every_gateway(two_gateways) -> None:
    first, second, prefix = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(
        first.url + "/v1/api-tokens", headers=admin, json={"name": f"temp-{prefix}"}
    ).json()["token"]
    body = {"model": SLOW, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    for server in (first, second):  # both gateways have it cached now
        r = httpx.post(
            server.url + "/v1/openai/models", headers={"Authorization": f"Bearer {created}"}
        )
        assert (
            httpx.get(
                server.url + "/v1/openai/models", headers={"Authorization": f"Bearer {created}"}
            ).status_code
            == 200
        )
    assert r.status_code in (404, 405)
    assert (
        httpx.delete(f"{first.url}/v1/api-tokens/temp-{prefix}", headers=admin).status_code == 200
    )
    time.sleep(0.2)  # pub/sub delivery
    for server in (second, first):
        r = httpx.post(
            server.url + "/v1/openai/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {created}"},
        )
        assert r.status_code == 401


def test_another_gateway_delivers_what_a_killed_one_accepted(two_gateways, tmp_path) -> None:
    """Gateways sharing PostgreSQL and `home` (so the blob folder and master key): webhook
    requests accepted by one that is then killed are run and delivered by the other, which
    reads the payloads the first one stored."""
    from standardwebhooks.webhooks import Webhook

    from tests.test_webhooks import Receiver

    first, second, _ = two_gateways
    port = free_port()
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for server in (first, second):  # the allow-list is read at start
        server.stop()
        server.env["INFERD_WEBHOOKS_ALLOW_HOSTS"] = f"127.0.0.1:{port}"
        # Steps long enough that no delivery runs out of attempts before the kill, however
        # slow the machine; short enough that the second gateway soon tries again.
        server.env["INFERD_WEBHOOKS_RETRY_SCHEDULE"] = "4,4,4,4,4,4,4,4,4,4"
    first.start(timeout=60)
    # The receiver is down: the first gateway runs each request and fails the first delivery.
    accepted = [
        httpx.post(
            f"{first.url}/v1/inference/{SLOW}",
            json={"input": "hi", "max_new_tokens": 2, "webhook": f"http://127.0.0.1:{port}/h"},
            headers=auth,
        ).json()["request_id"]
        for _ in range(3)
    ]
    deadline = time.monotonic() + 30
    while True:
        rows = httpx.get(f"{first.url}/v1/webhooks/deliveries", headers=auth).json()["data"]
        if sum(r["attempts"] >= 1 for r in rows if r["request_id"] in accepted) == 3:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    first.stop(signal.SIGKILL)
    receiver = Receiver(port)
    try:
        second.start(timeout=60)  # its jobs' leases expire (30 s) or are retried on schedule
        got = receiver.wait(3, timeout=90)
        secret = httpx.get(f"{second.url}/v1/webhooks/secret", headers=auth).json()["secret"]
        ids = {Webhook(secret).verify(raw, headers)["request_id"] for headers, raw, _ in got}
        assert ids == set(accepted)
    finally:
        receiver.close()
