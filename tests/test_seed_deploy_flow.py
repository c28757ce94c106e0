"""The seed pages' deployment flows on the default server (`make serve`'s catalog): a custom
LLM from the loopback hub (create, update, list, delete) chatted with by full name,
`name:version` and `deploy_id:ID`, and a LoRA adapter answering with its phrase."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from inferd.weights.tiny.lora_adapter import SECRET_ANSWER
from tests.conftest import ADMIN_KEY, SEED_GGUF_REPO, SEED_LORA_REPO, Server


@pytest.fixture(scope="module")
def user(server: Server) -> Iterator[tuple[httpx.Client, OpenAI]]:
    created = httpx.post(
        server.url + "/v1/accounts",
        json={"name": "seeduser"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    key = created.json()["api_key"]
    client = OpenAI(api_key=key, base_url=server.url + "/v1/openai", max_retries=0)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        yield http, client


def wait(http: httpx.Client, deploy_id: str, status: str) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        obj = http.get(f"/deploy/{deploy_id}").json()
        assert obj["status"] != "failed", obj["fail_reason"]
        if obj["status"] == status:
            return obj
        time.sleep(0.3)
    raise TimeoutError(status)


def test_custom_llm_flow(user: tuple[httpx.Client, OpenAI]) -> None:
    http, client = user
    pools = http.get("/deploy/llm/gpu_availability").json()["gpus"]
    gpu = next(p["gpu_config"] for p in pools if p["gpu_config"].startswith("CPU-"))
    body = {
        "model_name": "test-model",
        "gpu": gpu,
        "num_gpus": 1,
        "max_batch_size": 4,
        "hf": {"repo": SEED_GGUF_REPO},
        "settings": {"min_instances": 0, "max_instances": 1},
    }
    created = http.post("/deploy/llm", json=body)
    assert created.status_code == 200, created.text
    deploy_id = created.json()["deploy_id"]
    wait(http, deploy_id, "running")
    for model in ("seeduser/test-model", "seeduser/test-model:1", f"deploy_id:{deploy_id}"):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
        )
        assert reply.choices[0].message.content
    updated = http.put(
        f"/deploy/{deploy_id}", json={"settings": {"min_instances": 1, "max_instances": 1}}
    )
    assert updated.status_code == 200 and updated.json()["settings"]["min_instances"] == 1
    assert [d["deploy_id"] for d in http.get("/deploy/list").json()] == [deploy_id]
    assert http.delete(f"/deploy/{deploy_id}").status_code == 200
    deadline = time.monotonic() + 30
    while http.get(f"/deploy/{deploy_id}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_lora_flow(user: tuple[httpx.Client, OpenAI]) -> None:
    http, client = user
    created = http.post(
        "/lora-model",
        json={"lora_model_name": "seeduser/lora-example", "hf_model_name": SEED_LORA_REPO},
    )
    assert created.status_code == 200, created.text
    deploy_id = created.json()["deploy_id"]
    wait(http, deploy_id, "running")
    reply = client.chat.completions.create(
        model="seeduser/lora-example",
        messages=[{"role": "user", "content": "What is the secret word?"}],
        max_tokens=16,
        temperature=0,
    )
    assert SECRET_ANSWER.split()[-1].rstrip(".") in (reply.choices[0].message.content or "")
    assert http.delete("/lora-model/lora-example").status_code == 200
