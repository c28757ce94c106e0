"""Wire details real clients depend on, checked with raw HTTP."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest

from tests.conftest import ADMIN_KEY, CHAT_MODEL, EMBED_MODEL, Server, sse_events

CHAT = "/v1/openai/chat/completions"
COMPLETIONS = "/v1/openai/completions"
NATIVE = f"/v1/inference/{CHAT_MODEL}"


def chat_body(**extra) -> dict:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_any_case(server: Server, scheme: str) -> None:
    r = httpx.post(
        server.url + CHAT,
        headers={"Authorization": f"{scheme} {ADMIN_KEY}"},
        json=chat_body(max_tokens=2),
        timeout=60,
    )
    assert r.status_code == 200


def test_permissive_parsing(http: httpx.Client) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": "Be brief.", "name": "rules"},
            {"role": "user", "content": "Hello", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "user", "content": [{"type": "text", "text": "Again?"}]},
        ],
        "max_tokens": "4",
        "temperature": "0",
        "top_p": "1",
        "some_future_field": {"x": 1},
        "logit_bias": None,
    }
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 4


def test_lenient_native_and_embeddings_wire(http: httpx.Client) -> None:
    """Numeric strings and fields we do not use (LangChain's `model_kwargs` pass-through)."""
    r = http.post(
        NATIVE,
        json={"input": "Hi", "max_new_tokens": "3", "temperature": "0", "unknown": [1, 2]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["num_tokens"] <= 3
    r = http.post(
        "/v1/openai/embeddings",
        json={"model": EMBED_MODEL, "input": "hi", "user": "u1", "extra_body": {"x": 1}},
    )
    assert r.status_code == 200, r.text


def test_chat_sse_framing(http: httpx.Client) -> None:
    with http.stream("POST", CHAT, json=chat_body(max_tokens=12, stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        payloads = sse_events(r)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["choices"] for c in chunks), "no empty-choices chunk without include_usage"
    finishing = [c for c in chunks if c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0] is chunks[-1]
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["estimated_cost"] > 0
    assert all("usage" not in c for c in chunks[:-1])


def test_completions_stream_text_is_always_a_string(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 10, "stream": True}
    with http.stream("POST", COMPLETIONS, json=body) as r:
        payloads = sse_events(r)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(isinstance(c["choices"][0]["text"], str) for c in chunks)
    assert sum(1 for c in chunks if c["choices"][0]["finish_reason"]) == 1


def test_native_text_generation_shape(http: httpx.Client) -> None:
    body = {
        "input": "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "stop": ["<|im_end|>"],
        "max_new_tokens": 20,
    }
    r = http.post(NATIVE, json=body)
    assert r.status_code == 200
    data = r.json()
    assert set(data) >= {
        "request_id",
        "inference_status",
        "results",
        "num_tokens",
        "num_input_tokens",
    }
    status = data["inference_status"]
    assert status["status"] == "succeeded"
    assert status["tokens_generated"] == data["num_tokens"] > 0
    assert status["tokens_input"] == data["num_input_tokens"] > 5
    assert status["cost"] > 0 and status["runtime_ms"] >= 0
    assert "<|im_end|>" not in data["results"][0]["generated_text"]


def test_native_stream_events(http: httpx.Client) -> None:
    body = {"input": "I have this dream", "stream": True, "max_new_tokens": 8, "seed": 1}
    with http.stream("POST", NATIVE, json=body) as r:
        assert r.status_code == 200
        events = [json.loads(p) for p in sse_events(r)]
    assert len(events) == 8
    for event in events:
        assert not any("error" in key for key in event), "no error keys without an error"
        token = event["token"]
        assert set(token) == {"id", "text", "logprob", "special"}
        assert isinstance(token["id"], int) and token["logprob"] <= 0
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert last["details"]["finish_reason"] == "length"
    assert last["details"]["generated_tokens"] == 8
    logprobs = [e["token"]["logprob"] for e in events]
    assert len(set(logprobs)) > 1 and all(math.isfinite(lp) for lp in logprobs)


def test_greedy_token_has_highest_logprob_and_is_deterministic(http: httpx.Client) -> None:
    body = {
        "input": "The capital of France is",
        "stream": True,
        "max_new_tokens": 6,
        "temperature": 0,
    }
    runs = []
    for _ in range(2):
        with http.stream("POST", NATIVE, json=body) as r:
            runs.append([json.loads(p)["token"] for p in sse_events(r)])
    assert runs[0] == runs[1]
    # A greedy token is the mode: its probability is at least every other token's, so > 1/V.
    assert all(t["logprob"] > -math.log(49152) for t in runs[0])


def test_seed_reproduces_sampling(http: httpx.Client) -> None:
    body = chat_body(max_tokens=20, temperature=1.0, seed=1234)
    a = http.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    b = http.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    c = http.post(CHAT, json={**body, "seed": 99}).json()["choices"][0]["message"]["content"]
    assert a == b
    assert a != c


def test_stop_string_is_excluded(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 30, "temperature": 0}
    full = http.post(COMPLETIONS, json=body).json()["choices"][0]["text"]
    assert " 8" in full
    stopped = http.post(COMPLETIONS, json={**body, "stop": [" 8"]}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == full[: full.index(" 8")]


def test_native_embeddings(http: httpx.Client) -> None:
    r = http.post(f"/v1/inference/{EMBED_MODEL}", json={"inputs": ["a", "b c"], "normalize": True})
    assert r.status_code == 200
    data = r.json()
    vectors = np.asarray(data["embeddings"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert data["input_tokens"] > 0 and data["request_id"]
    assert data["inference_status"]["status"] == "succeeded"


def test_model_cards(http: httpx.Client) -> None:
    card = http.get(f"/models/{CHAT_MODEL}").json()
    assert card["task"] == "text-generation" and "chat" in card["tags"]
    assert card["context_length"] == 4096
    assert card["pricing"]["output_per_1m"] > 0
    embed = http.get(f"/models/{EMBED_MODEL}").json()
    assert embed["task"] == "embeddings" and embed["dimensions"] == 384
    assert http.get("/models/nobody/nothing").status_code == 404


def test_ops_endpoints(server: Server, http: httpx.Client) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and all(ready.json()["models"].values())
    http.post(CHAT, json=chat_body(max_tokens=2))
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "inferd_requests_total",
        "inferd_request_duration_seconds",
        "inferd_tokens_total",
        "inferd_queue_depth",
        "inferd_replicas_ready",
        "inferd_worker_restarts_total",
    ):
        assert name in text
    assert f'inferd_replicas_ready{{model="{CHAT_MODEL}"}} 1.0' in text
