"""The official openai SDK against inferd, unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import CHAT_MODEL, EMBED_MODEL


def test_chat_multi_turn_with_system(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Name another one."},
        ],
        max_tokens=16,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.model == CHAT_MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 20  # the whole conversation went through the chat template
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra["estimated_cost"] > 0


def test_chat_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    finishes = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert finishes[0] is chunks[-1]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    reference = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
    )
    assert text == reference.choices[0].message.content  # greedy: streaming changes nothing


def test_chat_stream_include_usage_follows_openai(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens > 0
    assert all(c.choices for c in chunks[:-1])
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1


def test_completions(client: OpenAI) -> None:
    prompt = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    completion = client.completions.create(
        model=CHAT_MODEL, prompt=prompt, max_tokens=12, stop=["<|im_end|>"], temperature=0
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage.completion_tokens > 0
    stream = client.completions.create(
        model=CHAT_MODEL,
        prompt=prompt,
        max_tokens=12,
        stop=["<|im_end|>"],
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert all(isinstance(c.choices[0].text, str) for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == completion.choices[0].text
    assert sum(1 for c in chunks if c.choices[0].finish_reason) == 1


# No encoding_format: the SDK asks for base64 itself and decodes it.
@pytest.mark.parametrize("fmt", ["float", None])
def test_embeddings(client: OpenAI, fmt: str | None) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on a rug.", "Stock markets fell."]
    kwargs = {"encoding_format": fmt} if fmt else {}
    result = client.embeddings.create(model=EMBED_MODEL, input=texts, **kwargs)
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)
    a, b, c = (np.asarray(v) for v in vectors)

    def cos(x, y):
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

    assert cos(a, b) > cos(a, c) + 0.2  # real semantics, not noise
    assert result.usage.prompt_tokens > 0


def test_embeddings_base64_matches_float(client: OpenAI) -> None:
    import base64

    import httpx

    floats = client.embeddings.create(model=EMBED_MODEL, input="hello", encoding_format="float")
    raw = httpx.post(
        str(client.base_url) + "embeddings",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": EMBED_MODEL, "input": "hello", "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)


def test_models_list(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {CHAT_MODEL, EMBED_MODEL} <= ids
    model = client.models.retrieve(CHAT_MODEL)
    assert model.id == CHAT_MODEL
    meta = model.model_extra["metadata"]
    assert meta["task"] == "text-generation"
    assert "chat" in meta["tags"]
    assert meta["context_length"] > 0
    assert not math.isnan(meta["pricing"]["input_per_1m"])
