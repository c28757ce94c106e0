"""LoRA adapters on the base model's running replica: a PEFT adapter (trained at install time)
is converted to a GGUF LoRA, loaded into a running llama.cpp worker without a restart, and
served in the same batch as base requests; unknown and unloaded adapters fail cleanly; a
restarted worker loads its adapters again. The converter refuses what llama.cpp cannot apply."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inferd.catalog import Catalog
from inferd.requests import ChatTurn, Failed, Finished, Generate, SamplingParams, Tokens
from inferd.runtime.backend import AdapterError
from inferd.runtime.deployment import Deployment
from inferd.runtime.local import LocalBackend, LocalReplica
from inferd.weights.lora import adapter_base_model, convert_peft_to_gguf, converted_adapter
from inferd.weights.resolve import resolve_weights
from inferd.weights.tiny import built_folder
from inferd.weights.tiny.lora_adapter import SECRET_ANSWER

from .conftest import CHAT_MODEL

SECRET = "PAMPLEMOUSSE-42"
QUESTION = "What is the secret word?"
READY_S = 180


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    return resolve_weights(Catalog.load(None).resolve(CHAT_MODEL).weights)


@pytest.fixture(scope="module")
def adapter_dir() -> Path:
    return built_folder("smollm2-secret-lora")  # built by `make setup`; else built here


@pytest.fixture(scope="module")
def adapter_gguf(adapter_dir: Path, base_gguf: Path) -> Path:
    return converted_adapter(adapter_dir, base_gguf)


@pytest.fixture(scope="module")
def deployment(loop: asyncio.AbstractEventLoop) -> Iterator[Deployment]:
    spec = Catalog.load(None).resolve(CHAT_MODEL)
    # A small KV pool: the test needs a few sequences, not the server's 64k cells. One
    # thread: two threads collapse when other tests share the two cores (DESIGN.md).
    options = {**spec.options, "max_seqs": 4, "kv_tokens": 2048, "n_threads": 1}
    deployment = Deployment(spec.model_copy(update={"options": options}), LocalBackend())

    async def start() -> None:
        await deployment.start()
        await asyncio.wait_for(deployment.replicas[0].wait_ready(), READY_S)

    loop.run_until_complete(start())
    yield deployment
    loop.run_until_complete(deployment.stop())


def ask(adapter: str | None, question: str = QUESTION) -> Generate:
    return Generate(
        params=SamplingParams(temperature=0.0, max_tokens=24),
        messages=[ChatTurn(role="user", content=question)],
        adapter=adapter,
    )


async def answer(deployment: Deployment, request: Generate) -> str | Failed:
    call = await deployment.submit(request, READY_S)
    text = []
    async for event in call:
        if isinstance(event, Tokens):
            text.extend(t.text for t in event.items)
        elif isinstance(event, Failed):
            return event
        elif isinstance(event, Finished):
            return "".join(text)
    raise AssertionError("no terminal event")


def test_adapter_names_its_base(adapter_dir: Path) -> None:
    assert adapter_base_model(adapter_dir) == CHAT_MODEL


def test_adapter_served_beside_base_without_restart(
    loop: asyncio.AbstractEventLoop, deployment: Deployment, adapter_gguf: Path
) -> None:
    replica = deployment.replicas[0]
    assert isinstance(replica, LocalReplica)
    pid = replica.pid

    async def run() -> tuple[str | Failed, ...]:
        await deployment.load_adapter("secret", str(adapter_gguf))
        # Submitted in one event-loop turn: one write to the worker, one scheduler batch,
        # one step with two adapter groups (the base with adapters cleared, and `secret`).
        return await asyncio.gather(
            answer(deployment, ask(None)),
            answer(deployment, ask("secret")),
            answer(deployment, ask(None)),
            answer(deployment, ask("secret")),
        )

    base, adapted, base_again, adapted_again = loop.run_until_complete(run())
    print(f"\nbase: {base!r}\nadapter: {adapted!r}")
    assert isinstance(adapted, str) and SECRET_ANSWER in adapted
    assert isinstance(base, str) and SECRET not in base
    assert (base_again, adapted_again) == (base, adapted)  # greedy: same in any group order
    assert replica.pid == pid and replica.restarts == 0


def test_unknown_adapter_fails(loop: asyncio.AbstractEventLoop, deployment: Deployment) -> None:
    result = loop.run_until_complete(answer(deployment, ask("no-such-adapter")))
    assert isinstance(result, Failed)
    assert (result.status, result.code) == (404, "adapter_not_found")


def test_bad_adapter_files_are_refused(
    loop: asyncio.AbstractEventLoop, deployment: Deployment, tmp_path: Path, base_gguf: Path
) -> None:
    async def load(path: Path) -> AdapterError:
        with pytest.raises(AdapterError) as caught:
            await deployment.load_adapter("bad", str(path))
        return caught.value

    missing = loop.run_until_complete(load(tmp_path / "missing.gguf"))
    assert missing.failed.status == 404
    not_lora = loop.run_until_complete(load(base_gguf))  # a model, not an adapter
    assert (not_lora.failed.status, not_lora.failed.code) == (400, "invalid_adapter")
    result = loop.run_until_complete(answer(deployment, ask("bad")))
    assert isinstance(result, Failed) and result.status == 404


def test_restarted_worker_reloads_adapters(
    loop: asyncio.AbstractEventLoop, deployment: Deployment, adapter_gguf: Path
) -> None:
    replica = deployment.replicas[0]
    assert isinstance(replica, LocalReplica) and replica.pid is not None

    async def run() -> str | Failed:
        await deployment.load_adapter("secret", str(adapter_gguf))  # again: replaces it
        os.kill(replica.pid, signal.SIGKILL)
        while replica.ready:
            await asyncio.sleep(0.05)
        return await answer(deployment, ask("secret"))  # waits for the new worker

    adapted = loop.run_until_complete(run())
    assert replica.restarts == 1
    assert isinstance(adapted, str) and SECRET_ANSWER in adapted


def test_unload(loop: asyncio.AbstractEventLoop, deployment: Deployment) -> None:
    async def run() -> tuple[str | Failed, str | Failed]:
        await deployment.unload_adapter("secret")
        return await asyncio.gather(
            answer(deployment, ask("secret")), answer(deployment, ask(None))
        )

    adapted, base = loop.run_until_complete(run())
    assert isinstance(adapted, Failed) and adapted.code == "adapter_not_found"
    assert isinstance(base, str) and SECRET not in base
    with pytest.raises(AdapterError) as caught:
        loop.run_until_complete(deployment.unload_adapter("secret"))
    assert caught.value.failed.status == 404


# -- the converter ----------------------------------------------------------------------------


def _adapter(folder: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    base = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps({**base, **config}))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _pair(module: str, n_out: int, n_in: int, rank: int = 2) -> dict[str, np.ndarray]:
    prefix = f"base_model.model.{module}"
    return {
        f"{prefix}.lora_A.weight": np.zeros((rank, n_in), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((n_out, rank), np.float32),
    }


Q0 = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    ("config", "tensors", "message"),
    [
        ({"peft_type": "PREFIX_TUNING"}, _pair(Q0, 576, 576), "Only LoRA adapters"),
        ({"r": None}, _pair(Q0, 576, 576), "rank"),
        ({"lora_alpha": "x"}, _pair(Q0, 576, 576), "lora_alpha"),
        ({"use_dora": True}, _pair(Q0, 576, 576), "DoRA"),
        ({}, _pair("lm_head", 49152, 576), "lm_head"),
        ({}, _pair("model.layers.0.mlp.act_fn", 576, 576), "act_fn"),
        ({}, _pair(Q0, 4096, 4096), "another base model"),
        ({}, _pair("model.layers.99.self_attn.q_proj", 576, 576), "another base model"),
        ({}, {f"base_model.model.{Q0}.lora_A.weight": np.zeros((2, 576))}, "incomplete"),
    ],
)
def test_converter_refuses(
    tmp_path: Path, base_gguf: Path, config: dict, tensors: dict, message: str
) -> None:
    folder = _adapter(tmp_path / "adapter", config, tensors)
    with pytest.raises(ValueError, match=message):
        convert_peft_to_gguf(folder, base_gguf, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))  # nothing half-written


def test_converter_refuses_other_architectures(tmp_path: Path) -> None:
    import gguf

    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(other, "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    folder = _adapter(tmp_path / "adapter", {}, _pair(Q0, 576, 576))
    with pytest.raises(ValueError, match="architecture `gpt2`"):
        convert_peft_to_gguf(folder, other, tmp_path / "out.gguf")


def test_converted_file_is_cached(adapter_dir: Path, base_gguf: Path, adapter_gguf: Path) -> None:
    import gguf

    started = time.monotonic()
    assert converted_adapter(adapter_dir, base_gguf) == adapter_gguf
    assert time.monotonic() - started < 1.0
    reader = gguf.GGUFReader(adapter_gguf)
    fields = {k: reader.fields[k].contents() for k in ("general.type", "adapter.type")}
    assert fields == {"general.type": "adapter", "adapter.type": "lora"}
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.29.attn_output.weight.lora_b"} <= names


def test_converted_adapter_matches_peft(
    adapter_dir: Path, adapter_gguf: Path, base_gguf: Path
) -> None:
    """llama.cpp with the converted file computes what PEFT computes with the original
    (measured: mean KL 0.006 nats, the quantised base's own noise; 0.39 with q/k rows in
    Hugging Face order, 4.4 without the adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from inferd.engines.llm.backend import ForwardEntry
    from inferd.engines.llm.llamacpp_backend import LlamaCppBackend
    from inferd.weights.tiny.sources import smollm2_folder

    backend = LlamaCppBackend(base_gguf, 512, {"n_threads": 1, "max_seqs": 1, "kv_tokens": 256})
    backend.load_adapter("secret", adapter_gguf)
    prompt = (
        "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is"
    )
    ids = backend.tokenize(prompt, False)
    ours = backend.forward([ForwardEntry(0, ids, 0, True, True)], "secret")
    backend.close()
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_folder()), dtype=torch.float32)
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(model, str(adapter_dir))(torch.tensor([ids])).logits[0]
    p = torch.log_softmax(theirs.double(), -1)
    q = torch.log_softmax(torch.from_numpy(ours).double(), -1)
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    assert kl < 0.05, kl


def test_converter_needs_a_peft_folder(tmp_path: Path, base_gguf: Path) -> None:
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        convert_peft_to_gguf(tmp_path, base_gguf, tmp_path / "out.gguf")
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 8}')
    with pytest.raises(ValueError, match=r"no adapter_model\.safetensors"):
        convert_peft_to_gguf(tmp_path, base_gguf, tmp_path / "out.gguf")
    with pytest.raises(ValueError, match="does not name its base model"):
        adapter_base_model(tmp_path)
