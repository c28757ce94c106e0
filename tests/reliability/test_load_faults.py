"""Mixed load from many clients across two accounts while things break: a worker is killed,
PostgreSQL restarts, Redis stops, the gateway is killed with a batch and webhook deliveries in
flight. Whatever happens, every request ends with a success or a clear JSON error, none hangs,
the ledger holds exactly one row per admitted request, and settled spending never passes a
limit.

The test runs its own PostgreSQL (initdb as the postgres user) and `redis-server` on free
ports (tests/reliability/services.py), never the machine's. `make test` runs it at about 1,200
requests from 120 clients; `make faults` at 10,000 from 300 (INFERD_FAULTS_REQUESTS,
INFERD_FAULTS_CLIENTS).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

import httpx
import pytest
import sqlalchemy
from openai import OpenAI

from tests.conftest import ADMIN_KEY, CHAT_MODEL, EMBED_MODEL, Server, free_port
from tests.reliability.services import OwnPostgres, OwnRedis
from tests.test_webhooks import Receiver

REQUESTS = int(os.environ.get("INFERD_FAULTS_REQUESTS", "1200"))
CLIENTS = int(os.environ.get("INFERD_FAULTS_CLIENTS", "120"))
DEADLINE_S = 60.0  # no request may take longer, faults included
VADER = "vader/sentiment"
PRICED, SLOW = "test/priced", "test/slow"
GREEDY_LIMIT = 0.05  # dollars: the greedy account's spending limit
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def catalog() -> str:
    """Two null models (one priced, one slow) and the default catalog's chat, embeddings and
    sentiment models, declared as the default catalog declares them."""
    text = resources.files("inferd.catalog").joinpath("default.toml").read_text()
    wanted = {CHAT_MODEL, EMBED_MODEL, VADER}
    models = [m for m in tomllib.loads(text)["models"] if m["name"] in wanted]
    null = (
        f'[[models]]\nname = "{PRICED}"\ntask = "text-generation"\nengine = "null"\n'
        "price = { input_per_1m = 500.0, output_per_1m = 500.0 }\n\n"
        f'[[models]]\nname = "{SLOW}"\ntask = "text-generation"\nengine = "null"\n'
        "options = { tokens = 4, token_delay_ms = 100 }\n\n"
    )
    return null + "".join(
        "[[models]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in m.items()) + "\n" for m in models
    )


def _toml(value: object) -> str:
    """A TOML value of the catalog's kinds (JSON's strings, numbers and arrays are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Stack:
    gateway: Server
    postgres: OwnPostgres
    redis: OwnRedis
    receiver: Receiver
    steady: tuple[str, str]  # (account id, key)
    greedy: tuple[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    postgres = OwnPostgres().start()
    redis = OwnRedis().start()
    receiver = Receiver(free_port())
    (root / "catalog.toml").write_text(catalog())
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_DATABASE_URL": postgres.url,
        "INFERD_REDIS_URL": redis.url,
        "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}",
        "INFERD_WEBHOOKS_RETRY_SCHEDULE": "0.3,0.5,1,2,4,8",
        "INFERD_LEDGER_FLUSH_INTERVAL_S": "0.2",
        "INFERD_BATCH_CONCURRENCY": "2",
    }
    gateway = Server(root / "gateway", env).start()
    accounts = []
    for name, fields in (
        ("steady", {}),
        ("greedy", {"concurrency_limit": 3, "spending_limit": GREEDY_LIMIT}),
    ):
        r = httpx.post(gateway.url + "/v1/accounts", json={"name": name, **fields}, headers=ADMIN)
        assert r.status_code == 200, r.text
        accounts.append((r.json()["id"], r.json()["api_key"]))
    try:
        yield Stack(gateway, postgres, redis, receiver, accounts[0], accounts[1])
    finally:
        gateway.stop()
        receiver.close()
        redis.stop()
        postgres.remove()


# -- the load ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    account: str
    status: int
    code: str | None  # the error's code, when there is one
    request_id: str | None
    seconds: float


def job(kind: str, hook: str) -> tuple[str, str, dict]:
    """(method path, model, body) of one request of `kind`."""
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    if kind == "chat":
        return "/v1/openai/chat/completions", CHAT_MODEL, {**chat, "temperature": 0}
    if kind == "stream":
        return "/v1/openai/chat/completions", CHAT_MODEL, {**chat, "stream": True}
    if kind == "embed":
        return "/v1/openai/embeddings", EMBED_MODEL, {"input": ["a short text", "another"]}
    if kind == "priced":
        return "/v1/openai/chat/completions", PRICED, chat
    if kind == "vader":
        return f"/v1/inference/{VADER}", VADER, {"input": "What a wonderful day!"}
    assert kind == "webhook"
    return f"/v1/inference/{SLOW}", SLOW, {"input": "hello", "webhook": hook}


# The mix, by weight. The LLM's share is small: on 2 CPU cores SmolLM2 answers a few requests a
# second, and a queue longer than the deadline would only measure the machine.
KINDS = {"chat": 4, "stream": 4, "embed": 12, "priced": 35, "vader": 30, "webhook": 15}


async def one(client: httpx.AsyncClient, kind: str, key: str, hook: str) -> Outcome:
    path, model, body = job(kind, hook)
    body = {"model": model, **body} if path.startswith("/v1/openai") else body
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    code = None
    try:
        async with client.stream("POST", path, json=body, headers=headers) as r:
            raw = await r.aread()
    except httpx.TransportError as exc:
        raise AssertionError(f"{kind}: the connection broke ({exc!r})") from None
    text = raw.decode(errors="replace")
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        assert text.endswith("data: [DONE]\n\n"), (
            f"{kind}: a stream that did not end: {text[-200:]}"
        )
        for frame in text.split("\n\n")[:-2]:
            event = json.loads(frame.removeprefix("data: "))
            if "error" in event:
                code = event["error"]["code"]  # an error after the stream started
    elif r.status_code >= 300:
        error = json.loads(text)["error"]  # always a JSON error, never an HTML page
        assert error["message"], text
        code = error["code"]
    # Admitted: it ran (a 200, maybe ended by an error event) or its worker died under it.
    admitted = r.status_code == 200 or code == "worker_crashed"
    request_id = r.headers.get("x-request-id") if admitted else None
    if kind == "webhook" and r.status_code == 200:  # queued: the result goes to the webhook
        answer = json.loads(text)
        assert answer["inference_status"]["status"] == "queued"
        request_id = answer["request_id"]
    return Outcome(kind, key, r.status_code, code, request_id, time.monotonic() - started)


def load(stack: Stack, count: int, fault: Callable[[], None] | None = None) -> list[Outcome]:
    """`count` mixed requests from CLIENTS concurrent clients, a third from the greedy account;
    `fault` runs in a thread half a second in."""
    rng = random.Random(count)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    plan = [
        (kind, stack.greedy[1] if i % 3 == 0 else stack.steady[1]) for i, kind in enumerate(kinds)
    ]

    async def run() -> list[Outcome]:
        queue = list(reversed(plan))
        outcomes: list[Outcome] = []
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=stack.gateway.url, timeout=DEADLINE_S, limits=limits
        ) as client:

            async def worker() -> None:
                while queue:
                    kind, key = queue.pop()
                    outcomes.append(await one(client, kind, key, stack.receiver.url))

            await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        return outcomes

    thread = None
    if fault is not None:
        thread = threading.Timer(0.5, fault)
        thread.start()
    try:
        return asyncio.run(run())
    finally:
        if thread is not None:
            thread.join()


def check(outcomes: list[Outcome], allowed_5xx: set[str]) -> None:
    """Each request ended: a success, a JSON 4xx, a 503, or a 5xx the fault explains."""
    for o in outcomes:
        assert o.seconds < DEADLINE_S
        if o.status in (200, 202) and o.code is None:
            continue
        if o.status == 200:  # the stream had begun when the fault hit it
            assert o.code in allowed_5xx, o
        elif 400 <= o.status < 500 or o.status == 503:
            assert o.code, o
        else:
            assert o.code in allowed_5xx, o


# -- the test ----------------------------------------------------------------------------------


def test_mixed_load_through_faults(stack: Stack) -> None:
    per_phase = REQUESTS // 5
    everything: list[Outcome] = []

    baseline = load(stack, per_phase * 2)
    check(baseline, set())
    statuses = Counter((o.account == stack.greedy[1], o.status) for o in baseline)
    # The steady account is served; the greedy one is pushed over its limits (429, then 402).
    assert statuses[(False, 200)] + statuses[(False, 202)] > 0.95 * sum(
        n for (greedy, _), n in statuses.items() if not greedy
    )
    assert statuses[(True, 429)] > 0 and statuses[(True, 402)] > 0
    everything += baseline

    # A worker dies: its requests fail fast with a clear error; it restarts; the rest succeed.
    def kill_worker() -> None:
        for pid in stack.gateway.worker_pids(CHAT_MODEL):
            os.kill(pid, signal.SIGKILL)

    killed = load(stack, per_phase, kill_worker)
    check(killed, {"worker_crashed"})
    everything += killed
    after = load(stack, 40)
    check(after, set())
    assert all(o.status in (200, 202, 402, 429) for o in after), Counter(o.status for o in after)
    everything += after

    # PostgreSQL restarts: requests are served from caches; the ledger catches up after.
    restarted = load(stack, per_phase, lambda: stack.postgres.restart(down_s=1.5))
    check(restarted, set())
    assert sum(o.status in (200, 202) for o in restarted) > 0.5 * len(restarted)
    everything += restarted

    # Redis stops: limits and budgets fail closed with a clear 503, and recover.
    def redis_away() -> None:
        stack.redis.stop()
        time.sleep(2.0)
        stack.redis.start()

    away = load(stack, per_phase, redis_away)
    check(away, set())
    closed = [o for o in away if o.status == 503]
    assert closed and {o.code for o in closed} <= {"limits_unavailable"}, Counter(
        o.code for o in closed
    )
    everything += away
    time.sleep(1.0)
    recovered = load(stack, 40)
    check(recovered, set())
    assert not [o for o in recovered if o.status == 503]
    everything += recovered

    assert_one_ledger_row_per_admitted_request(stack, everything)
    assert_spending_within_limit(stack)


def test_gateway_sigkill_with_a_batch_and_deliveries_in_flight(stack: Stack) -> None:
    gateway = stack.gateway
    client = OpenAI(api_key=stack.steady[1], base_url=gateway.url + "/v1/openai", max_retries=2)
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": SLOW, "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(40)
    ]
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    data.name = "batch.jsonl"
    upload = client.files.create(file=data, purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    already = len(stack.receiver.received)
    hooks = []
    for _ in range(15):
        r = httpx.post(
            f"{gateway.url}/v1/inference/{SLOW}",
            json={"input": "hello", "webhook": stack.receiver.url},
            headers={"Authorization": f"Bearer {stack.steady[1]}"},
        )
        assert r.status_code == 200 and r.json()["inference_status"]["status"] == "queued"
        hooks.append(r.json()["request_id"])
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gateway.stop(signal.SIGKILL)
    gateway.start()

    # Lines the killed process held are claimed again once their 30 s lease runs out.
    restarted = time.monotonic()
    deadline = restarted + 240
    while (done := client.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline, (done.status, done.request_counts)
        time.sleep(0.3)
    print(f"batch completed {time.monotonic() - restarted:.1f} s after the restart")
    assert done.request_counts.completed == 40 and done.request_counts.failed == 0
    assert done.output_file_id is not None
    output = [
        json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == sorted(f"line-{i}" for i in range(40))
    # Every delivery arrives (a retried one with the same webhook id: counted once).
    delivered: set[str] = set()
    deadline = time.monotonic() + 60
    while not set(hooks) <= delivered:
        assert time.monotonic() < deadline, set(hooks) - delivered
        delivered = {
            json.loads(raw)["request_id"] for _, raw, _ in stack.receiver.received[already:]
        }
        time.sleep(0.2)
    rows = ledger_counts(stack, [f"{batch.id}-%"])
    assert len(rows) == 40 and set(rows.values()) == {1}, rows
    rows = ledger_ids(stack, hooks)
    assert rows == dict.fromkeys(hooks, 1)


# -- the ledger --------------------------------------------------------------------------------


def _db(stack: Stack) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        stack.postgres.url.replace("postgresql:", "postgresql+psycopg:")
    )


def ledger_ids(stack: Stack, ids: list[str]) -> dict[str, int]:
    engine = _db(stack)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sqlalchemy.text(
                    "SELECT request_id, count(*) FROM usage WHERE request_id = ANY(:ids) "
                    "GROUP BY request_id"
                ),
                {"ids": ids},
            ).all()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows}


def ledger_counts(stack: Stack, patterns: list[str]) -> dict[str, int]:
    engine = _db(stack)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sqlalchemy.text(
                    "SELECT request_id, count(*) FROM usage WHERE request_id LIKE ANY(:p) "
                    "GROUP BY request_id"
                ),
                {"p": patterns},
            ).all()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows}


def delivered(stack: Stack, ids: set[str]) -> dict[str, dict]:
    """The webhook results of `ids`, once every one has arrived (retries happen)."""
    deadline = time.monotonic() + 120
    while True:
        results = {}
        for _, raw, _ in list(stack.receiver.received):
            result = json.loads(raw)
            results[result["request_id"]] = result
        if ids <= set(results) or time.monotonic() > deadline:
            assert ids <= set(results), f"{len(ids - set(results))} deliveries never arrived"
            return {i: results[i] for i in ids}
        time.sleep(0.2)


def assert_one_ledger_row_per_admitted_request(stack: Stack, outcomes: list[Outcome]) -> None:
    ids = [o.request_id for o in outcomes if o.request_id is not None]
    assert len(ids) == len(set(ids)), "a request id was given twice"
    # A webhook request is queued, then admitted when its job runs: refused then (the
    # spending limit ran out meanwhile), its result says so and it bills nothing.
    hooks = {o.request_id for o in outcomes if o.kind == "webhook" and o.request_id}
    results = delivered(stack, hooks)
    refused = {rid for rid, r in results.items() if r["inference_status"]["status"] == "failed"}
    assert {results[rid]["error"]["code"] for rid in refused} <= {"spending_limit_reached"}
    admitted = [rid for rid in ids if rid not in refused]
    assert not ledger_ids(stack, sorted(refused))
    deadline = time.monotonic() + 60  # the ledger flushes
    while True:
        rows = ledger_ids(stack, admitted)
        if len(rows) == len(admitted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = set(admitted) - set(rows)
    assert not missing, f"{len(missing)} admitted requests have no usage row"
    assert set(rows.values()) == {1}, Counter(rows.values())
    # Nor does any request the clients never saw admitted have a row.
    engine = _db(stack)
    try:
        with engine.connect() as c:
            [total] = c.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM usage WHERE account_id IN (:a, :b) "
                    "AND request_id NOT LIKE 'batch%' AND route NOT LIKE '%uptime'"
                ),
                {"a": stack.steady[0], "b": stack.greedy[0]},
            ).one()
    finally:
        engine.dispose()
    assert total == len(admitted)


def assert_spending_within_limit(stack: Stack) -> None:
    engine = _db(stack)
    try:
        with engine.connect() as c:
            [spent] = c.execute(
                sqlalchemy.text("SELECT coalesce(sum(cost), 0) FROM usage WHERE account_id = :a"),
                {"a": stack.greedy[0]},
            ).one()
    finally:
        engine.dispose()
    assert 0 < spent <= GREEDY_LIMIT + 1e-9, spent


def test_client_gone_mid_stream_frees_its_slot_and_stops_generation(stack: Stack) -> None:
    gateway = stack.gateway
    r = httpx.post(
        gateway.url + "/v1/accounts",
        json={"name": "leaver", "concurrency_limit": 1},
        headers=ADMIN,
    )
    key = r.json()["api_key"]
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=DEADLINE_S) as client:
        with client.stream("POST", "/v1/openai/chat/completions", json=body) as r:
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            lines = r.iter_lines()
            assert [line for line, _ in zip(lines, range(6), strict=False) if line]
        # Gone: the slot is free for the account's next request (limit 1), at once.
        deadline = time.monotonic() + 10
        while True:
            again = client.post(
                "/v1/openai/chat/completions", json={**body, "stream": False, "max_tokens": 2}
            )
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status_code == 200, again.text
    # And its generation stopped: nothing of it is in flight, and it was billed what it made.
    deadline = time.monotonic() + 10
    while gateway.metric("inferd_queue_depth", CHAT_MODEL) > 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    deadline = time.monotonic() + 20
    while not (row := ledger_row(stack, request_id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status, completion_tokens = row
    assert status == 499 and 0 < completion_tokens < 2000


def ledger_row(stack: Stack, request_id: str) -> tuple[int, int] | None:
    engine = _db(stack)
    try:
        with engine.connect() as c:
            row = c.execute(
                sqlalchemy.text(
                    "SELECT status, completion_tokens FROM usage WHERE request_id = :r"
                ),
                {"r": request_id},
            ).first()
    finally:
        engine.dispose()
    return (row[0], row[1]) if row else None
