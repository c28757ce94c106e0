"""Scale-out on Ray Serve, end to end: two inferd gateways sharing PostgreSQL and Redis place
every model on the suite's two-node Ray cluster (head 127.0.0.2, worker 127.0.0.3) and call
the same replicas through deployment handles. Built-in models, deployments created at run
time, LoRA adapters (Serve multiplexing), autoscaling to zero and back, a GPU type no node has,
and the loss of the worker node mid-traffic."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import (
    ADMIN_KEY,
    CHAT_MODEL,
    EMBED_MODEL,
    SEED_GGUF_REPO,
    SEED_LORA_REPO,
    Server,
)
from tests.pg_schema import own_schema
from tests.ray_cluster import GPU_TYPE, HEAD_IP, NODE_DEATH_S, WORKER_IP, RayCluster
from tests.test_limits_cluster import assert_limit_exact
from tests.test_tenancy import REDIS_URL, services_available

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

SLOW = "test/ray-slow"  # the limit storm: 60 tokens at 100 ms
STREAM = "test/ray-stream"  # the node loss: two replicas, 100 tokens at 50 ms
HEALTH_PERIOD_S = 1.0  # Serve's replica health checks (settings of the gateways)
HEALTH_TIMEOUT_S = 2.0
NO_NODE_GPU = "H100-80GB"  # a pool the gateways offer that no Ray node has
SECRET = "PAMPLEMOUSSE"


def catalog() -> str:
    """The default catalog's chat and embeddings models, two replicas each (one per node),
    and two null models."""
    text = (Path(__file__).parents[1] / "inferd" / "catalog" / "default.toml").read_text()
    blocks = {}
    for block in text.split("[[models]]")[1:]:
        for name in (CHAT_MODEL, EMBED_MODEL):
            if f'name = "{name}"\n' in block:
                blocks[name] = block.replace("kv_tokens = 65536", "kv_tokens = 8192")
    declared = "".join(f"[[models]]{block.rstrip()}\nreplicas = 2\n\n" for block in blocks.values())
    return (
        declared
        + f"""
[[models]]
name = "{SLOW}"
task = "text-generation"
engine = "null"
options = {{ tokens = 60, token_delay_ms = 100, max_seqs = 256 }}

[[models]]
name = "{STREAM}"
task = "text-generation"
engine = "null"
replicas = 2
options = {{ tokens = 100, token_delay_ms = 50, max_seqs = 64 }}
"""
    )


CONFIG = f"""
[[pools]]
name = "{GPU_TYPE}"
count = 2
usd_per_hour = 1.0
emulated = true
ray_num_cpus = 0.1

[[pools]]
name = "{NO_NODE_GPU}"
count = 1
usd_per_hour = 2.0
emulated = true
"""


@pytest.fixture(scope="module")
def gateways(
    ray_cluster: RayCluster, seed_hub: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server, str]]:
    if not services_available():
        pytest.skip("PostgreSQL or Redis not reachable")
    root = tmp_path_factory.mktemp("ray-gateways")
    (root / "catalog.toml").write_text(catalog())
    prefix = f"ray-{secrets.token_hex(4)}"
    with own_schema("ray_backend") as database_url:
        env = {
            "INFERD_ADMIN_KEY": ADMIN_KEY,
            "INFERD_CATALOG": str(root / "catalog.toml"),
            "INFERD_DATABASE_URL": database_url,
            "INFERD_REDIS_URL": REDIS_URL,
            "INFERD_REDIS_PREFIX": prefix,
            "INFERD_HF_ENDPOINT": seed_hub.url,
            "INFERD_MODEL_CACHE": str(root / "models"),
            "INFERD_RECONCILE_INTERVAL_S": "0.3",
            "INFERD_BACKEND": "ray",
            "INFERD_RAY_ADDRESS": ray_cluster.address,
            "INFERD_RAY_CPUS_PER_REPLICA": "0.2",
            "INFERD_RAY_HEALTH_CHECK_PERIOD_S": str(HEALTH_PERIOD_S),
            "INFERD_RAY_HEALTH_CHECK_TIMEOUT_S": str(HEALTH_TIMEOUT_S),
            "INFERD_RAY_AUTOSCALE_LOOK_BACK_S": "2",
            # Serve's autoscaling metrics, pushed from handles and replicas this often.
            "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
        }
        first = Server(root / "a", env)
        (first.home / "config.toml").write_text(CONFIG)
        first.start(timeout=240)
        second = Server(root / "b", {**env, "INFERD_HOME": str(first.home)}).start(timeout=120)
        try:
            yield first, second, prefix
        finally:
            first.stop()
            second.stop()


def serve_config(app: str) -> dict[str, Any]:
    """The deployment config of an application, as Serve's controller holds it."""
    from inferd.runtime.ray_backend import _read_cluster

    return _read_cluster()[0][app].config


def serve_replicas(app: str) -> list[dict[str, Any]]:
    """Serve's replicas of an application, as its controller reports them now."""
    from inferd.runtime.ray_backend import _read_cluster

    view = _read_cluster()[0].get(app)
    return [] if view is None else view.replicas


def running_nodes(app: str) -> list[str]:
    return sorted(
        r["node_ip"]
        for r in serve_replicas(app)
        if str(getattr(r["state"], "value", r["state"])) == "RUNNING"
    )


def wait_for(check, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


@pytest.fixture(scope="module")
def user(gateways: tuple[Server, Server, str]) -> Iterator[tuple[str, str]]:
    """An account (its name and API key) with room for the deployments here."""
    first, _, prefix = gateways
    name = f"rayuser{prefix[-8:]}"
    created = httpx.post(
        first.url + "/v1/accounts",
        json={"name": name},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    yield name, created.json()["api_key"]


def api(server: Server, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


def test_both_gateways_stream_chat_and_embeddings_from_replicas_on_both_nodes(
    gateways: tuple[Server, Server, str], ray_cluster: RayCluster
) -> None:
    for model in (CHAT_MODEL, EMBED_MODEL):
        app = "builtin-" + model.replace("/", "-")
        # Two replicas for both gateways (instances are shared), one on each node.
        assert running_nodes(app) == [HEAD_IP, WORKER_IP], serve_replicas(app)
    canary = f"canary-{secrets.token_hex(8)}"
    for server in gateways[:2]:
        client = OpenAI(api_key=ADMIN_KEY, base_url=server.url + "/v1/openai", max_retries=0)
        for _ in range(2):
            stream = client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": f"Name a color. {canary}"}],
                max_tokens=12,
                temperature=0,
                stream=True,
            )
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text.strip()
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            assert finish in ("length", "stop")
        embedded = client.embeddings.create(model=EMBED_MODEL, input=["one", "two", canary])
        assert [len(e.embedding) for e in embedded.data] == [384, 384, 384]
    assert running_nodes("builtin-" + CHAT_MODEL.replace("/", "-")) == [HEAD_IP, WORKER_IP]
    # Privacy: the prompts reached no file of either node (logs, spilled objects) or gateway.
    for root in (ray_cluster.root, gateways[0].root, gateways[1].root):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert canary.encode() not in path.read_bytes(), path


def test_the_200_slot_limit_is_exact_across_the_two_gateways(
    gateways: tuple[Server, Server, str],
) -> None:
    first, second, prefix = gateways
    assert_limit_exact(first, second, prefix, SLOW)


def test_a_changed_built_in_model_rolls_over_in_place(
    gateways: tuple[Server, Server, str],
) -> None:
    """`inferd models seed` with a changed entry: the same Serve application gets the new
    replicas (Serve rolls them over), and both gateways serve the new declaration."""
    first, second, _ = gateways
    app = "builtin-" + SLOW.replace("/", "-")
    before = {r["replica_id"] for r in serve_replicas(app)}
    changed = first.root / "changed.toml"
    changed.write_text(
        catalog().replace("tokens = 60, token_delay_ms = 100", "tokens = 5, token_delay_ms = 1")
    )
    subprocess.run(
        [sys.executable, "-m", "inferd", "models", "seed", str(changed)],
        env=first.env,
        check=True,
        capture_output=True,
        timeout=60,
    )

    def tokens(server: Server) -> int:
        client = OpenAI(api_key=ADMIN_KEY, base_url=server.url + "/v1/openai", max_retries=0)
        try:
            reply = client.chat.completions.create(
                model=SLOW, messages=[{"role": "user", "content": "x"}], max_tokens=100
            )
        except openai.InternalServerError as exc:
            # A stream longer than the replicas' grace period (the old declaration's take 6 s)
            # ends with the retryable 503 when its replica leaves; a retry lands on a new one.
            assert exc.status_code == 503 and "retry" in exc.message
            return -1
        return reply.usage.completion_tokens

    wait_for(lambda: tokens(first) == 5 and tokens(second) == 5, 60, "the new declaration")

    def replaced() -> bool:
        now = {r["replica_id"] for r in serve_replicas(app)}
        return bool(now) and not now & before

    wait_for(replaced, 30, "the old replicas gone")


def test_a_deployment_created_through_one_gateway_is_served_by_the_other_and_scales_0_2_0(
    gateways: tuple[Server, Server, str], user: tuple[str, str], ray_cluster: RayCluster
) -> None:
    first, second, _ = gateways
    name, key = user
    settings = {
        "min_instances": 0,
        "max_instances": 2,
        "scale_up_window_s": 0.3,
        "scale_down_window_s": 0.5,
        "scale_to_zero_s": 5,
    }
    body = {
        "model_name": "bursty",
        "gpu": GPU_TYPE,
        "num_gpus": 1,
        "max_batch_size": 1,
        "hf": {"repo": SEED_GGUF_REPO},
        "settings": settings,
    }
    with api(first, key) as a, api(second, key) as b:
        created = a.post("/deploy/llm", json=body)
        assert created.status_code == 200, created.text
        deploy_id = created.json()["deploy_id"]
        running = wait_for(
            lambda: (o := b.get(f"/deploy/{deploy_id}").json())["status"] == "running" and o,
            180,
            "running",
        )
        # The settings as Serve holds them: every autoscaling field, the batch size as the
        # requests a replica takes, the pool's CPU share and GPU type.
        config = serve_config(deploy_id)
        autoscaling = config["autoscaling_config"]
        assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (0, 2)
        assert autoscaling["upscale_delay_s"] == 0.3 and autoscaling["downscale_delay_s"] == 0.5
        assert autoscaling["downscale_to_zero_delay_s"] == 5
        assert autoscaling["target_ongoing_requests"] == 1 and config["max_ongoing_requests"] == 1
        actor = config["ray_actor_options"]
        assert actor["num_cpus"] == 0.1 and actor["resources"] == {GPU_TYPE: 1}
        # The first instance runs on the node that offers the GPU type, for both gateways.
        worker = ray_cluster.worker_node_id()
        listed = running["instances"]["list"]
        assert listed and all(i["node"] == worker for i in listed), listed
        # Each gateway reads Serve's state once a second: they agree within a few.
        wait_for(
            lambda: (
                a.get(f"/deploy/{deploy_id}").json()["instances"]["list"]
                == b.get(f"/deploy/{deploy_id}").json()["instances"]["list"]
            ),
            10,
            "both gateways listing the same instances",
        )
        wait_for(
            lambda: b.get(f"/deploy/{deploy_id}").json()["instances"]["running"] == 0,
            60,
            "scale to zero",
        )
        client = OpenAI(api_key=key, base_url=second.url + "/v1/openai", max_retries=0)

        def one(_: int) -> int:
            reply = client.completions.create(
                model=f"{name}/bursty", prompt="Once upon a time", max_tokens=32, temperature=0
            )
            return reply.usage.completion_tokens

        with ThreadPoolExecutor(4) as pool:
            burst = pool.map(one, range(8))
            peak = wait_for(
                lambda: (
                    (o := a.get(f"/deploy/{deploy_id}").json())["instances"]["running"] == 2 and o
                ),
                120,
                "two instances under the burst",
            )
            assert all(n > 0 for n in burst)
        nodes = {i["node"] for i in peak["instances"]["list"]}
        assert nodes == {worker}
        wait_for(
            lambda: a.get(f"/deploy/{deploy_id}").json()["instances"]["list"] == [],
            60,
            "back to zero",
        )
        assert a.delete(f"/deploy/{deploy_id}").status_code == 200
        wait_for(lambda: not serve_replicas(deploy_id), 60, "the application deleted")


def test_a_gpu_type_no_node_has_stays_pending_with_that_reason(
    gateways: tuple[Server, Server, str], user: tuple[str, str]
) -> None:
    first, second, _ = gateways
    _, key = user
    body = {
        "model_name": "nowhere",
        "gpu": NO_NODE_GPU,
        "num_gpus": 1,
        "max_batch_size": 2,
        "hf": {"repo": SEED_GGUF_REPO},
        "settings": {"min_instances": 1, "max_instances": 1},
    }
    with api(first, key) as a, api(second, key) as b:
        deploy_id = a.post("/deploy/llm", json=body).json()["deploy_id"]
        try:
            pending = wait_for(
                lambda: (
                    (o := b.get(f"/deploy/{deploy_id}").json())["instances"]["pending"] == 1
                    and NO_NODE_GPU in (o["status_reason"] or "")
                    and o
                ),
                120,
                "pending with a reason",
            )
            assert pending["status"] == "deploying", pending
            assert pending["instances"]["running"] == 0
            time.sleep(2)
            again = a.get(f"/deploy/{deploy_id}").json()
            assert again["status"] == "deploying" and again["instances"]["running"] == 0
        finally:
            a.delete(f"/deploy/{deploy_id}")


def test_a_lora_adapter_is_served_through_serve_multiplexing(
    gateways: tuple[Server, Server, str], user: tuple[str, str]
) -> None:
    first, second, _ = gateways
    name, key = user
    with api(second, key) as b:
        created = b.post(
            "/lora-model", json={"lora_model_name": "secret", "hf_model_name": SEED_LORA_REPO}
        )
        assert created.status_code == 200, created.text
        deploy_id = created.json()["deploy_id"]

        def status() -> str:
            listed = b.get("/models/lora/list").json()
            return next(d["status"] for d in listed if d["deploy_id"] == deploy_id)

        wait_for(lambda: status() == "running", 180, "the adapter running")
    question = [{"role": "user", "content": "What is the secret word?"}]
    for server in (first, second, first):
        client = OpenAI(api_key=key, base_url=server.url + "/v1/openai", max_retries=0)
        answer = client.chat.completions.create(
            model=f"{name}/secret", messages=question, max_tokens=16, temperature=0
        )
        assert SECRET in (answer.choices[0].message.content or "")
    base = OpenAI(api_key=key, base_url=first.url + "/v1/openai", max_retries=0)
    plain = base.chat.completions.create(
        model=CHAT_MODEL, messages=question, max_tokens=16, temperature=0
    )
    assert SECRET not in (plain.choices[0].message.content or "")


async def _stream(client: httpx.AsyncClient, key: str) -> tuple[str, float]:
    """One long stream: `done`, `error` (an error event ended it) or the HTTP status; and
    when it ended (monotonic)."""
    body = {"model": STREAM, "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with client.stream(
        "POST",
        "/v1/openai/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        if r.status_code != 200:
            await r.aread()
            return str(r.status_code), time.monotonic()
        lines = [line async for line in r.aiter_lines() if line]
    errors = [line for line in lines if line.startswith('data: {"error"')]
    if errors:
        assert "worker stopped unexpectedly" in errors[0], errors
        return "error", time.monotonic()
    assert lines[-1] == "data: [DONE]", lines[-3:]
    return "done", time.monotonic()


def test_losing_the_worker_node_mid_traffic_fails_its_requests_cleanly_and_recovers(
    gateways: tuple[Server, Server, str], user: tuple[str, str], ray_cluster: RayCluster
) -> None:
    first, second, _ = gateways
    _, key = user
    app = "builtin-" + STREAM.replace("/", "-")
    assert running_nodes(app) == [HEAD_IP, WORKER_IP]
    # A deployed version that only the worker node can hold (its GPU type), kept at one.
    with api(first, key) as a:
        deploy_id = a.post(
            "/deploy/llm",
            json={
                "model_name": "pinned",
                "gpu": GPU_TYPE,
                "num_gpus": 1,
                "max_batch_size": 2,
                "hf": {"repo": SEED_GGUF_REPO},
                "settings": {"min_instances": 1, "max_instances": 1},
            },
        ).json()["deploy_id"]

        def pinned() -> dict:
            return a.get(f"/deploy/{deploy_id}").json()

        wait_for(lambda: pinned()["instances"]["running"] == 1, 180, "the pinned instance")

        async def traffic() -> tuple[list[tuple[str, float]], float]:
            async with (
                httpx.AsyncClient(base_url=first.url, timeout=120) as c1,
                httpx.AsyncClient(base_url=second.url, timeout=120) as c2,
            ):
                streams = [
                    asyncio.create_task(_stream(c1 if i % 2 else c2, key)) for i in range(16)
                ]
                await asyncio.sleep(1.5)
                killed_at = time.monotonic()
                await asyncio.to_thread(ray_cluster.kill_worker)
                return await asyncio.gather(*streams), killed_at

        results, killed_at = asyncio.run(traffic())
        outcomes = [outcome for outcome, _ in results]
        # Every stream ended: those on the lost node with the worker-lost error, the others
        # in full; none hung past Ray's health checks noticing (generous slack).
        assert set(outcomes) <= {"done", "error"}, outcomes
        assert "error" in outcomes and "done" in outcomes, outcomes
        slack = 3 * (NODE_DEATH_S + HEALTH_PERIOD_S + HEALTH_TIMEOUT_S) + 15
        assert max(ended for _, ended in results) - killed_at < slack

        # New requests succeed once Ray has noticed: five in a row, within the same bound.
        async def recovered() -> float:
            async with httpx.AsyncClient(base_url=second.url, timeout=60) as c:
                ok = 0
                while ok < 5:
                    outcome, ended = await _stream(c, key)
                    ok = ok + 1 if outcome == "done" else 0
                    assert ended - killed_at < slack + 60, "never recovered"
                return ended

        asyncio.run(recovered())
        # Serve restores the built-in model's two replicas on the node left.
        wait_for(lambda: running_nodes(app) == [HEAD_IP, HEAD_IP], 60, "two replicas again")
        # The pinned version has no node for its GPU type now: pending, with the reason.
        wait_for(
            lambda: (
                (o := pinned())["instances"]["running"] == 0
                and GPU_TYPE in (o["status_reason"] or "")
            ),
            60,
            "pinned pending",
        )
        ray_cluster.start_worker()
        back = wait_for(
            lambda: (o := pinned())["instances"]["running"] == 1 and o, 120, "pinned back"
        )
        assert [i["node"] for i in back["instances"]["list"]] == [ray_cluster.worker_node_id()]
        a.delete(f"/deploy/{deploy_id}")
