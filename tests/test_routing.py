"""Routes: a model name served by targets here and at other OpenAI-compatible providers, with
fallback before the first byte, cooldowns with a half-open probe, policies, the data policy,
and inferd's own wire format whatever the provider sends.

The Done-when scenario puts a real `llama_cpp.server` (the default catalog's GGUF, on loopback)
and a second inferd (the suite's shared server) behind one route and drives it with the
`openai` SDK; a provider double on loopback (tests/provider_double.py) makes the faults a real
server will not make on demand.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from openai import OpenAI

from inferd.auth import Principal
from inferd.catalog import Catalog, DeployedVersion, ModelSpec, Price, Route, RouteTarget
from inferd.config import Settings
from inferd.serving import RequestError, Serving
from inferd.serving.route_health import RouteHealth
from inferd.serving.routing import Router
from inferd.weights.resolve import resolve_weights
from tests.conftest import ADMIN_KEY, CHAT_MODEL, Server, free_port, sse_events
from tests.provider_double import COMPLETION_TOKENS, PROMPT_TOKENS, ProviderDouble
from tests.test_privacy import CANARY, files_under

NULL, NULL_2 = "test/null-model", "test/null-model-2"
CATALOG = f"""
[[models]]
name = "{NULL}"
task = "text-generation"
engine = "null"
price = {{ input_per_1m = 1.0, output_per_1m = 2.0 }}

[[models]]
name = "{NULL_2}"
task = "text-generation"
engine = "null"
"""
CONFIG = f"""
route_failure_threshold = 2
route_cooldown_s = 6.0
route_connect_timeout_s = 2.0
route_first_byte_timeout_s = 60.0

[[routes]]
name = "cfg/null"
targets = [{{ model = "{NULL}" }}]
"""
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("routing")
    (root / "catalog.toml").write_text(CATALOG)
    (root / "config.toml").write_text(CONFIG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_CONFIG": str(root / "config.toml"),
        "INFERD_LEDGER_FLUSH_INTERVAL_S": "0.1",
    }
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderDouble]:
    double = ProviderDouble()
    yield double
    double.close()


@pytest.fixture(scope="module")
def admin(router: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=router.url, headers=ADMIN, timeout=60) as c:
        yield c


def account(server: Server, name: str, **fields: object) -> httpx.Client:
    created = httpx.post(server.url + "/v1/accounts", json={"name": name, **fields}, headers=ADMIN)
    assert created.status_code == 200, created.text
    key = created.json()["api_key"]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def ext(provider: ProviderDouble, model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "base_url": provider.base_url, "api_key": "sk-provider", **extra}


def make_route(c: httpx.Client, name: str, targets: list, **fields: object) -> dict:
    r = c.post("/v1/routes", json={"name": name, "targets": targets, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def chat(c: httpx.Client, model: str, **fields: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    return c.post("/v1/openai/chat/completions", json=body)


# -- the routes API --------------------------------------------------------------------------


def test_routes_api_keys_are_write_only_and_kept_on_replace(
    admin: httpx.Client, provider: ProviderDouble
) -> None:
    made = make_route(admin, "api/keys", [ext(provider, "ok"), {"model": NULL}])
    assert made["public"] is True and made["source"] == "api"
    assert made["task"] == "text-generation" and made["policy"] == "ordered"
    assert [t["has_api_key"] for t in made["targets"]] == [True, False]
    assert "sk-provider" not in json.dumps(made)
    assert admin.get("/v1/routes/api/keys").json() == made
    listed = admin.get("/v1/routes").json()
    assert "api/keys" in [r["name"] for r in listed["data"]]
    assert "sk-provider" not in json.dumps(listed)

    # A replace without api_key keeps the stored key of the same target.
    replaced = admin.put(
        "/v1/routes/api/keys",
        json={"targets": [{"model": "ok", "base_url": provider.base_url}], "policy": "cheapest"},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["targets"][0]["has_api_key"] is True
    assert replaced.json()["policy"] == "cheapest"
    assert chat(admin, "api/keys").status_code == 200
    assert provider.last()[1] == "Bearer sk-provider"

    assert admin.delete("/v1/routes/api/keys").status_code == 200
    assert admin.get("/v1/routes/api/keys").status_code == 404
    assert chat(admin, "api/keys").status_code == 404


def test_routes_api_refuses_what_the_caller_may_not_make(
    router: Server, admin: httpx.Client, provider: ProviderDouble
) -> None:
    alice = account(router, "alice-routes")
    bob = account(router, "bob-routes")
    # An account routes under its own prefix, to models it may use; private to it.
    mine = make_route(alice, "alice-routes/fast", [{"model": NULL}])
    assert mine["public"] is False
    r = chat(alice, "alice-routes/fast")
    assert r.status_code == 200, r.text
    assert r.headers["x-inferd-served-by"] == NULL
    assert r.json()["model"] == "alice-routes/fast"
    assert chat(bob, "alice-routes/fast").status_code == 404
    assert bob.get("/v1/routes/alice-routes/fast").status_code == 404
    assert bob.delete("/v1/routes/alice-routes/fast").status_code == 404
    alice_models = [m["id"] for m in alice.get("/v1/openai/models").json()["data"]]
    bob_models = [m["id"] for m in bob.get("/v1/openai/models").json()["data"]]
    assert "alice-routes/fast" in alice_models and "alice-routes/fast" not in bob_models
    assert "cfg/null" in alice_models and "cfg/null" in bob_models
    card = alice.get("/models/alice-routes/fast").json()
    assert card["model_name"] == "alice-routes/fast" and card["route_targets"] == [NULL]
    assert bob.get("/models/alice-routes/fast").status_code == 404

    refusals = [
        ("alice-routes/out", [ext(provider, "ok")], 403),  # external: the operator's
        ("public-name", [{"model": NULL}], 403),  # outside alice's prefix
        ("alice-routes/nothing", [{"model": "no/such-model"}], 400),
        ("alice-routes/fast", [{"model": NULL}], 409),  # exists
    ]
    for name, targets, status in refusals:
        r = alice.post("/v1/routes", json={"name": name, "targets": targets})
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["message"]
    # Nobody shadows a model that exists, not even the operator.
    r = admin.post("/v1/routes", json={"name": NULL, "targets": [ext(provider, "ok")]})
    assert r.status_code == 409 and "shadow" in r.json()["error"]["message"]
    # A config route is changed in the config file.
    r = admin.put("/v1/routes/cfg/null", json={"targets": [{"model": NULL_2}]})
    assert r.status_code == 409 and "config" in r.json()["error"]["message"]
    # Scoped JWTs are for inference, not management.
    jwt = alice.post("/v1/scoped-jwt", json={"api_key_name": "auto", "models": [NULL]}).json()
    r = httpx.get(router.url + "/v1/routes", headers={"Authorization": f"Bearer {jwt['token']}"})
    assert r.status_code == 403


def test_route_name_matching_longest_path_and_health_first(admin: httpx.Client) -> None:
    make_route(admin, "deep/a/b", [{"model": NULL}])
    assert admin.get("/v1/routes/deep/a/b").json()["name"] == "deep/a/b"
    health = admin.get("/v1/routes/deep/a/b/health").json()
    assert health["name"] == "deep/a/b"
    assert health["targets"][0]["state"] == "healthy"
    bad = admin.post("/v1/routes", json={"name": "x/health", "targets": [{"model": NULL}]})
    assert bad.status_code == 400


def test_cli_manages_routes(router: Server, provider: ProviderDouble) -> None:
    env = {
        **os.environ,
        "INFERD_URL": router.url,
        "INFERD_API_KEY": ADMIN_KEY,
        "PROVIDER_KEY": "sk-from-cli",
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "inferd", "routes", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = cli(
        "create", "cli/r", "--target", NULL, "--target", f"ok@{provider.base_url}",
        "--provider-key-env", "PROVIDER_KEY", "--policy", "cheapest",
    )  # fmt: skip
    assert made.startswith("cli/r\tcheapest\tpublic\tapi\t")
    assert "cli/r" in cli("list")
    # `cheapest`: the provider's declared price (0) undercuts the model here (1 and 2 per 1M).
    with httpx.Client(base_url=router.url, headers=ADMIN, timeout=30) as c:
        served = chat(c, "cli/r")
    assert served.headers["x-inferd-served-by"] == f"ok@{provider.netloc}"
    assert provider.last()[1] == "Bearer sk-from-cli"
    health = cli("health", "cli/r")
    assert f"ok@{provider.netloc}\thealthy" in health and f"{NULL}\thealthy" in health
    cli("delete", "cli/r")
    assert "cli/r" not in cli("list")


def test_config_route_serves(admin: httpx.Client) -> None:
    got = admin.get("/v1/routes/cfg/null").json()
    assert got["source"] == "config" and got["public"] is True
    r = chat(admin, "cfg/null")
    assert r.status_code == 200 and r.headers["x-inferd-served-by"] == NULL


# -- passthrough: inferd's wire format whatever the provider sends ---------------------------


def test_passthrough_unary_bills_at_the_targets_price(
    router: Server, admin: httpx.Client, provider: ProviderDouble
) -> None:
    price = {"input_per_1m": 1000.0, "output_per_1m": 2000.0}
    make_route(admin, "pt/unary", [ext(provider, "ok", price=price)])
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = chat(
        admin,
        "pt/unary",
        logprobs=True,
        top_logprobs=2,
        max_tokens=5,
        tools=tools,
        response_format={"type": "json_object"},
        vendor_extension={"kept": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["model"] == "pt/unary"
    assert body["choices"][0]["message"]["content"] == "Hello from the provider"
    cost = PROMPT_TOKENS * 1000 / 1e6 + COMPLETION_TOKENS * 2000 / 1e6
    assert body["usage"]["estimated_cost"] == pytest.approx(cost)
    assert body["usage"]["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS
    assert r.headers["x-inferd-served-by"] == f"ok@{provider.netloc}"
    sent, _ = provider.last()
    # Everything the client sent passes through; only the model name is the provider's.
    assert sent["model"] == "ok" and sent["logprobs"] is True and sent["top_logprobs"] == 2
    assert sent["max_tokens"] == 5 and "stream_options" not in sent
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}
    assert sent["vendor_extension"] == {"kept": True}

    # One usage row, named by the route and the target that served, at its price.
    time.sleep(0.5)
    with sqlite3.connect(router.home / "inferd.db") as db:
        rows = db.execute(
            "SELECT model, served_by, prompt_tokens, completion_tokens, cost FROM usage "
            "WHERE model = 'pt/unary'"
        ).fetchall()
    assert len(rows) == 1 and rows[0][:4] == (
        "pt/unary",
        f"ok@{provider.netloc}",
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert rows[0][4] == pytest.approx(cost)


@pytest.mark.parametrize("include_usage", [False, True])
def test_passthrough_stream_usage_as_inferd_sends_it(
    admin: httpx.Client, provider: ProviderDouble, include_usage: bool
) -> None:
    name = f"pt/stream-{include_usage}"
    make_route(admin, name, [ext(provider, "ok")])
    fields: dict = {"stream": True}
    if include_usage:
        fields["stream_options"] = {"include_usage": True}
    with admin.stream(
        "POST",
        "/v1/openai/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "hi"}], **fields},
    ) as r:
        assert r.status_code == 200
        payloads = sse_events(r)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["model"] == name and c["id"].startswith("chatcmpl-") for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == (
        "Hello from the provider"
    )
    # The provider was always asked for usage, so the request is billed either way.
    assert provider.last()[0]["stream_options"] == {"include_usage": True}
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1
    if include_usage:
        assert "usage" not in finishing[0]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 7
    else:
        assert finishing[0]["usage"]["completion_tokens"] == COMPLETION_TOKENS
        assert all(c["choices"] for c in chunks)


def test_provider_errors_in_inferds_shape_without_fallback(
    admin: httpx.Client, provider: ProviderDouble
) -> None:
    make_route(admin, "pt/bad-request", [ext(provider, "status-400"), ext(provider, "ok")])
    before = len(provider.requests)
    r = chat(admin, "pt/bad-request")
    assert r.status_code == 400
    error = r.json()["error"]
    assert "provider says 400" in error["message"] and error["code"] == "provider_400"
    # The request was wrong, not the provider: no other target was tried.
    assert len(provider.requests) == before + 1


def test_fallback_on_429_and_5xx_and_failure_when_all_fail(
    admin: httpx.Client, provider: ProviderDouble
) -> None:
    make_route(
        admin,
        "pt/fallback",
        [ext(provider, "status-429"), ext(provider, "status-503"), ext(provider, "ok")],
    )
    r = chat(admin, "pt/fallback", stream=True)
    assert r.status_code == 200
    assert r.headers["x-inferd-served-by"] == f"ok@{provider.netloc}"
    assert "provider says" not in r.text  # nothing of the failed hops reached the client

    make_route(admin, "pt/all-fail", [ext(provider, "status-500"), ext(provider, "status-502")])
    r = chat(admin, "pt/all-fail")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "route_failed"
    assert "status-500@" in r.json()["error"]["message"]
    health = admin.get("/v1/routes/pt/all-fail/health").json()
    assert [t["failures"] for t in health["targets"]] == [1, 1]
    assert health["targets"][0]["last_error"] == "provider_500"


def test_failure_after_first_token_ends_the_stream_with_an_error_event(
    admin: httpx.Client, provider: ProviderDouble
) -> None:
    make_route(admin, "pt/drop", [ext(provider, "drop"), ext(provider, "ok")])
    with admin.stream(
        "POST",
        "/v1/openai/chat/completions",
        json={"model": "pt/drop", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as r:
        assert r.status_code == 200
        payloads = sse_events(r)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    # The provider's connection closed mid-answer: a cut, whether or not the HTTP framing shows it.
    assert events[-1]["error"]["code"] in ("upstream_unreachable", "upstream_truncated")
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if "choices" in e)
    assert text == "Hello from"  # no silent switch: the second target never answered


def test_embeddings_route_to_a_provider(admin: httpx.Client, provider: ProviderDouble) -> None:
    make_route(admin, "pt/embed", [ext(provider, "embedder")], task="embeddings")
    r = admin.post("/v1/openai/embeddings", json={"model": "pt/embed", "input": "hi"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == [0.5, 0.25]
    assert r.json()["model"] == "pt/embed"
    # A text-generation endpoint does not serve an embeddings route.
    assert chat(admin, "pt/embed").status_code == 400


def test_routed_content_and_provider_keys_reach_no_disk_or_log(
    router: Server, admin: httpx.Client, provider: ProviderDouble
) -> None:
    make_route(admin, "privacy/r", [ext(provider, "status-503"), ext(provider, "ok")])
    make_route(admin, "privacy/bad", [ext(provider, "status-400")])
    prompt = [{"role": "user", "content": f"remember {CANARY}"}]
    for model, stream in (("privacy/r", False), ("privacy/r", True), ("privacy/bad", False)):
        admin.post(
            "/v1/openai/chat/completions",
            json={"model": model, "messages": prompt, "stream": stream},
        )
    assert any(CANARY in json.dumps(body) for body, _ in provider.requests)  # it did travel
    time.sleep(0.5)
    needles = [CANARY.encode(), b"Hello from the provider", b"sk-provider"]
    hits = [
        str(path)
        for root in (router.home, router.tmp, router.log_path.parent)
        for path in files_under(root)
        for needle in needles
        if needle in path.read_bytes()
    ]
    assert not hits, f"found on disk: {sorted(set(hits))}"
    assert "privacy/r" in router.log_text()  # the log has the request's metadata


# -- who may use what ------------------------------------------------------------------------


def test_zero_retention_never_reaches_a_retaining_provider(
    router: Server, admin: httpx.Client, provider: ProviderDouble
) -> None:
    make_route(admin, "zr/retaining", [ext(provider, "ok")])
    make_route(
        admin,
        "zr/mixed",
        [ext(provider, "ok"), ext(provider, "no-usage", zero_retention=True)],
        zero_retention=True,
    )
    careful = account(router, "careful-routes", zero_retention=True)
    r = chat(careful, "zr/retaining")
    assert r.status_code == 403 and r.json()["error"]["code"] == "data_policy"
    # The route's own policy skips the retaining target though it is first.
    r = chat(admin, "zr/mixed")
    assert r.status_code == 200
    assert r.headers["x-inferd-served-by"] == f"no-usage@{provider.netloc}"
    assert provider.last()[0]["model"] == "no-usage"


def test_scoped_token_must_allow_the_route(router: Server, admin: httpx.Client) -> None:
    carol = account(router, "carol-routes")
    make_route(carol, "carol-routes/r", [{"model": NULL}])
    jwt = carol.post("/v1/scoped-jwt", json={"api_key_name": "auto", "models": [NULL]}).json()
    scoped = {"Authorization": f"Bearer {jwt['token']}"}
    with httpx.Client(base_url=router.url, headers=scoped, timeout=30) as c:
        assert chat(c, "carol-routes/r").status_code == 403
    jwt = carol.post(
        "/v1/scoped-jwt", json={"api_key_name": "auto", "models": ["carol-routes/r"]}
    ).json()
    with httpx.Client(
        base_url=router.url, headers={"Authorization": f"Bearer {jwt['token']}"}, timeout=30
    ) as c:
        assert chat(c, "carol-routes/r").status_code == 200


def test_deprecation_is_a_route_with_a_date(admin: httpx.Client) -> None:
    r = admin.post(
        "/v1/routes",
        json={
            "name": NULL_2,
            "targets": [{"model": NULL}],
            "deprecated_at": "2001-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201, r.text
    served = chat(admin, NULL_2)
    assert served.status_code == 200
    assert served.headers["x-inferd-served-by"] == NULL
    assert served.headers["deprecation"] == "@978307200"
    assert admin.delete(f"/v1/routes/{NULL_2}").status_code == 200
    again = chat(admin, NULL_2)
    assert again.status_code == 200 and "x-inferd-served-by" not in again.headers


def test_every_hop_checks_the_budget(router: Server, provider: ProviderDouble) -> None:
    broke = account(router, "broke-routes", spending_limit=0)
    with httpx.Client(base_url=router.url, headers=ADMIN, timeout=30) as admin:
        make_route(admin, "budget/r", [ext(provider, "ok", price={"input_per_1m": 1.0})])
    before = len(provider.requests)
    r = chat(broke, "budget/r")
    assert r.status_code == 402 and r.json()["error"]["code"] == "spending_limit_reached"
    assert len(provider.requests) == before  # refused before anything left for the provider


def test_name_resolution_order() -> None:
    """Built-in model, deploy_id, deployment (and LoRA), route; deprecation is a dated route."""
    builtin = ModelSpec(name="b/model", task="text-generation", engine="null")
    other = ModelSpec(name="b/other", task="text-generation", engine="null")
    catalog = Catalog([builtin, other])
    deployed = ModelSpec(
        name="acct/dep", task="text-generation", engine="null", deploy_id="d1", account_id="a1"
    )
    catalog.publish([DeployedVersion(deployed, "running")])
    here = (RouteTarget("b/model"),)
    catalog.publish_routes(
        [
            Route("acct/dep", here, account_id="a1", public=False),  # a race: made meanwhile
            Route("acct/route", here, account_id="a1", public=False),
            Route(
                "b/other", (RouteTarget("b/model"),), deprecated_at=datetime(2001, 1, 1, tzinfo=UTC)
            ),
        ]
    )
    serving = Serving(Settings(), catalog, None, None, None, None)  # type: ignore[arg-type]
    alice = Principal("a1", "auto", False, None, None)
    bob = Principal("b1", "auto", False, None, None)
    assert serving.lookup(alice, "b/model", None) is builtin
    assert serving.lookup(alice, "deploy_id:d1", None) is deployed
    assert serving.lookup(alice, "acct/dep", None) is deployed  # the deployment wins
    assert isinstance(serving.lookup(alice, "acct/route", None), Route)
    with pytest.raises(RequestError) as refused:
        serving.lookup(bob, "acct/route", None)  # private to its account
    assert refused.value.status == 404
    # Past its date, the deprecated name is served by its route's target.
    standing = serving.lookup(bob, "b/other", None)
    assert isinstance(standing, ModelSpec) and standing.name == "b/model"
    assert standing.stands_in_for is not None and standing.stands_in_for.name == "b/other"
    assert catalog.route("b/other") is None  # answered through the model's name only


# -- policies and shared health (in-process, real Redis) --------------------------------------


def _targets() -> tuple[RouteTarget, ...]:
    return (
        RouteTarget("a", "http://a/v1", weight=9.0, price=Price(input_per_1m=5)),
        RouteTarget("b", "http://b/v1", weight=1.0, price=Price(input_per_1m=1)),
    )


def test_policies_order_targets() -> None:
    catalog = Catalog([])
    settings = Settings()
    router = Router(settings, RouteHealth(catalog, 3, 30.0, 5.0), catalog)
    cheapest = Route("p/c", _targets(), policy="cheapest")
    assert [t.model for t in router.order(cheapest, list(cheapest.targets))] == ["b", "a"]
    fastest = Route("p/f", _targets(), policy="fastest")
    router.health.success(fastest, fastest.targets[0], 5.0)
    router.health.success(fastest, fastest.targets[1], 50.0)
    assert [t.model for t in router.order(fastest, list(fastest.targets))] == ["a", "b"]
    weighted = Route("p/w", _targets(), policy="weighted")
    firsts = Counter(router.order(weighted, list(weighted.targets))[0].model for _ in range(2000))
    assert 0.85 < firsts["a"] / 2000 < 0.95


def test_cooldowns_are_shared_through_redis_with_one_probe() -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        prefix = f"test-routing-{time.time_ns()}"
        catalog = Catalog([])
        route = Route("shared/r", _targets())
        catalog.publish_routes([route])
        one = RouteHealth(catalog, 2, 0.5, 5.0, redis, prefix)
        two = RouteHealth(catalog, 2, 0.5, 5.0, redis, prefix)
        target = route.targets[0]
        try:
            await one.failure(route, target, "upstream_unreachable")
            await two.failure(route, target, "upstream_unreachable")  # the second, elsewhere
            await one.refresh(route)
            assert one.phase(route, target) == "cooling_down"
            assert one.report(route, target).failures == 2
            await asyncio.sleep(0.6)
            await two.refresh(route)
            assert two.phase(route, target) == "half_open"
            claims = [await one.claim_probe(route, target), await two.claim_probe(route, target)]
            assert claims == [True, False]  # one probe across gateways
            one.success(route, target, 3.0)
            await asyncio.sleep(0.1)
            await two.refresh(route)
            assert two.phase(route, target) == "healthy"
        finally:
            await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}:*")] or ["-"])
            await redis.aclose()

    asyncio.run(scenario())


# -- Done when: llama_cpp.server and a second inferd behind one route -------------------------


class LlamaServer:
    """`python -m llama_cpp.server` on the default catalog's GGUF, restartable on its port."""

    def __init__(self, root: Path) -> None:
        spec = Catalog.load(None).resolve(CHAT_MODEL)
        self.args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(resolve_weights(spec.weights)),
            "--n_ctx",
            "2048",
            "--model_alias",
            "smol",
            "--port",
            str(free_port()),
            "--verbose",
            "false",
        ]
        self.port = int(self.args[-3])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = root / "llama.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(self.log.read_text()[-2000:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def _stream_text(client: OpenAI, model: str) -> tuple[str, str, list]:
    """Streams one chat with the SDK: (text, served by, chunks)."""
    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    ) as response:
        served_by = response.headers["x-inferd-served-by"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, served_by, chunks


def test_llama_cpp_server_and_a_second_inferd_behind_one_route(
    router: Server, admin: httpx.Client, server: Server, tmp_path: Path
) -> None:
    llama = LlamaServer(tmp_path)
    llama.start()
    try:
        make_route(
            admin,
            "public/smol",
            [
                {"model": "smol", "base_url": llama.base_url},
                {"model": CHAT_MODEL, "base_url": server.url + "/v1/openai", "api_key": ADMIN_KEY},
            ],
        )
        client = OpenAI(api_key=ADMIN_KEY, base_url=router.url + "/v1/openai", max_retries=0)
        first = f"smol@127.0.0.1:{llama.port}"
        second = f"{CHAT_MODEL}@127.0.0.1:{server.port}"

        text, served_by, chunks = _stream_text(client, "public/smol")
        assert text and served_by == first
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        assert chunks[-1].model == "public/smol"

        # The first target dies: requests move to the second, and the client sees no error.
        llama.kill()
        for _ in range(2):  # route_failure_threshold = 2
            text, served_by, chunks = _stream_text(client, "public/smol")
            assert text and served_by == second
            assert chunks[-1].usage is not None
        health = admin.get("/v1/routes/public/smol/health").json()["targets"]
        # Cooling down (on a slow machine its 6 s may be over already: then half-open).
        assert health[0]["state"] in ("cooling_down", "half_open"), health[0]
        assert health[0]["cooldown_until"] and health[0]["failures"] >= 2
        assert health[0]["last_error"] == "upstream_unreachable"
        assert health[1]["state"] == "healthy" and health[1]["samples"] >= 2
        # While it cools down, requests go straight to the second target.
        assert _stream_text(client, "public/smol")[1] == second

        # Back up: once the cooldown ends, one request probes it and it rejoins.
        llama.start()
        deadline = time.monotonic() + 30
        while admin.get("/v1/routes/public/smol/health").json()["targets"][0]["state"] != (
            "half_open"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        text, served_by, _ = _stream_text(client, "public/smol")
        assert text and served_by == first
        health = admin.get("/v1/routes/public/smol/health").json()["targets"]
        assert health[0]["state"] == "healthy" and health[0]["failures"] == 0
    finally:
        llama.kill()
