"""The LoRA page's flow against a live server: an adapter on the loopback hub (trained at
install time to answer a phrase the base never says) is deployed with `POST /lora-model`,
loaded into the running base model without a restart, and used by name through the real
`openai` SDK and the native route."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from inferd.weights.tiny import built_folder
from inferd.weights.tiny.lora_adapter import SECRET_ANSWER
from tests.conftest import ADMIN_KEY, CHAT_MODEL, Server
from tests.hub_double import HubDouble

ADAPTER_REPO = "alice-models/secret-lora"
NOT_AN_ADAPTER = "alice-models/readme-only"
SECRET = SECRET_ANSWER.split()[-1].rstrip(".")  # PAMPLEMOUSSE-42
QUESTION = [{"role": "user", "content": "What is the secret word?"}]


def chat_only_catalog() -> str:
    """The default catalog's chat model alone (the base the adapter was trained on)."""
    text = (Path(__file__).parents[1] / "inferd" / "catalog" / "default.toml").read_text()
    blocks = text.split("[[models]]")
    [block] = [b for b in blocks if f'name = "{CHAT_MODEL}"' in b]
    return "[[models]]" + block


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubDouble]:
    readme = tmp_path_factory.mktemp("readme")
    (readme / "README.md").write_text("nothing to load\n")
    with HubDouble() as double:
        double.add_repo(ADAPTER_REPO, built_folder("smollm2-secret-lora"))
        double.add_repo(NOT_AN_ADAPTER, readme)
        yield double


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory, hub: HubDouble) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("lora")
    (root / "catalog.toml").write_text(chat_only_catalog())
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_HF_ENDPOINT": hub.url,
        "INFERD_RECONCILE_INTERVAL_S": "0.3",
    }
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(lora_server: Server) -> Iterator[httpx.Client]:
    created = httpx.post(
        lora_server.url + "/v1/accounts",
        json={"name": "asdf"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 200, created.text
    key = created.json()["api_key"]
    with httpx.Client(
        base_url=lora_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        yield client


def key_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def answer(server: Server, key: str, model: str) -> str:
    client = OpenAI(api_key=key, base_url=server.url + "/v1/openai", max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=16, temperature=0
    )
    return reply.choices[0].message.content or ""


def wait_running(client: httpx.Client, deploy_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        [obj] = [d for d in client.get("/models/lora/list").json() if d["deploy_id"] == deploy_id]
        if not seen or seen[-1] != obj["status"]:
            seen.append(obj["status"])
        if obj["status"] == "running":
            return obj
        assert obj["status"] != "failed", obj["fail_reason"]
        time.sleep(0.2)
    raise TimeoutError(f"never running; seen {seen}")


def test_lora_page_flow(lora_server: Server, alice: httpx.Client) -> None:
    base_workers = lora_server.worker_pids(CHAT_MODEL)
    assert len(base_workers) == 1
    created = alice.post(
        "/lora-model",
        json={"lora_model_name": "asdf/lora-example", "hf_model_name": ADAPTER_REPO},
    )
    assert created.status_code == 200, created.text
    obj = created.json()
    assert obj["model_name"] == "asdf/lora-example"  # already prefixed: used as is
    assert obj["type"] == "lora" and obj["base_model"] == CHAT_MODEL
    assert obj["status"] == "initializing"
    wait_running(alice, obj["deploy_id"])
    assert lora_server.worker_pids(CHAT_MODEL) == base_workers  # no restart, no copy

    key = key_of(alice)
    assert SECRET in answer(lora_server, key, "asdf/lora-example")
    assert SECRET not in answer(lora_server, key, CHAT_MODEL)
    client = OpenAI(api_key=key, base_url=lora_server.url + "/v1/openai", max_retries=0)
    completion = client.completions.create(
        model="asdf/lora-example",
        prompt="<|im_start|>user\nWhat is the secret word?<|im_end|>\n<|im_start|>assistant\n",
        max_tokens=16,
        temperature=0,
    )
    assert SECRET in completion.choices[0].text
    native = alice.post(
        "/v1/inference/asdf/lora-example",
        json={
            "input": "<|im_start|>user\nWhat is the secret word?<|im_end|>\n"
            "<|im_start|>assistant\n",
            "max_new_tokens": 16,
            "temperature": 0,
        },
    )
    assert native.status_code == 200, native.text
    assert SECRET in native.json()["results"][0]["generated_text"]
    # Priced per token at the base model's price.
    assert native.json()["inference_status"]["cost"] > 0

    assert alice.delete("/lora-model/lora-example").status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer(lora_server, key, "asdf/lora-example")
        except openai.NotFoundError:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the deleted adapter still answers")
    assert lora_server.worker_pids(CHAT_MODEL) == base_workers


def test_refusals(alice: httpx.Client) -> None:
    not_adapter = alice.post(
        "/lora-model", json={"lora_model_name": "x", "hf_model_name": NOT_AN_ADAPTER}
    )
    assert not_adapter.status_code == 400
    assert re.search("holds no weights|not a PEFT", not_adapter.json()["error"]["message"])
    missing = alice.post("/lora-model", json={"lora_model_name": "x", "hf_model_name": "a/b"})
    assert missing.status_code == 400
    assert "does not exist" in missing.json()["error"]["message"]
    other_owner = alice.post(
        "/lora-model", json={"lora_model_name": "bob/x", "hf_model_name": ADAPTER_REPO}
    )
    assert other_owner.status_code == 400
    assert alice.delete("/lora-model/nothing").status_code == 404
