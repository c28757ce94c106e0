"""Bad input gets a clear 4xx in the right shape; never a 500, a hang or a leaked slot."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ADMIN_KEY, CHAT_MODEL, EMBED_MODEL, Server

CHAT = "/v1/openai/chat/completions"


def assert_openai_error(r: httpx.Response, status: int, needle: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert needle.lower() in error["message"].lower(), error["message"]
    return error


def test_missing_and_wrong_credentials(server: Server) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(server.url + CHAT, json=body)
    assert_openai_error(r, 401, "authorization")
    r = httpx.post(server.url + CHAT, json=body, headers={"Authorization": "Bearer nope"})
    assert_openai_error(r, 401, "invalid api key")
    r = httpx.post(server.url + CHAT, json=body, headers={"Authorization": "Basic abc"})
    assert_openai_error(r, 401, "bearer")


def test_authentication_comes_before_every_other_check(server: Server) -> None:
    """A stranger learns nothing about models or bodies: 401 whatever the request holds."""
    bad = {"Authorization": "Bearer nope"}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    vision_to_text_model = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image]}],
    }
    cases = [
        (CHAT, {"json": vision_to_text_model}),
        (CHAT, {"json": {"model": "no/such-model", "messages": []}}),
        (CHAT, {"content": b"{not json"}),
        ("/v1/openai/embeddings", {"json": {"model": CHAT_MODEL, "input": "x"}}),
        ("/v1/inference/no/such-model", {"json": {"input": "x"}}),
        ("/v1/inference/openai/whisper-tiny.en", {"files": {"audio": ("a.txt", b"nope")}}),
    ]
    for path, kwargs in cases:
        r = httpx.post(server.url + path, headers=bad, **kwargs)
        assert_openai_error(r, 401, "invalid api key")


def test_unknown_model_is_404(http: httpx.Client) -> None:
    r = http.post(
        CHAT, json={"model": "no/such-model", "messages": [{"role": "user", "content": "x"}]}
    )
    error = assert_openai_error(r, 404, "does not exist")
    assert error["param"] == "model"
    assert http.post("/v1/inference/no/such-model", json={"input": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": CHAT_MODEL}, "messages"),
        ({"model": CHAT_MODEL, "messages": []}, "messages"),
        ({"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "role"),
        (
            {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 7},
            "temperature",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": "lots",
            },
            "max_tokens",
        ),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x"}], "n": 17}, "n"),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "not in `tools`",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "retrieval"}],
            },
            "type `function`",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": "required",
            },
            "no `tools`",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"},
            },
            "response_format",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nope"}},
                },
            },
            "invalid schema",
        ),
        (
            {
                "model": CHAT_MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ],
            },
            "image_url",
        ),
        ({"model": EMBED_MODEL, "messages": [{"role": "user", "content": "x"}]}, "embeddings"),
    ],
)
def test_invalid_chat_requests_are_400(http: httpx.Client, body: dict, needle: str) -> None:
    assert_openai_error(http.post(CHAT, json=body), 400, needle)


def test_malformed_json_is_400(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_openai_error(r, 400, "not valid json")
    r = http.post(CHAT, content=b"[1, 2]")
    assert_openai_error(r, 400, "json object")
    r = http.post(f"/v1/inference/{CHAT_MODEL}", content=b"\xff\xfe")
    assert r.status_code == 400


def test_context_overflow_is_400(http: httpx.Client) -> None:
    long_prompt = "hello " * 5000
    r = http.post(
        CHAT, json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": long_prompt}]}
    )
    assert_openai_error(r, 400, "maximum context length")
    r = http.post(
        CHAT,
        json={
            "model": CHAT_MODEL,
            "max_tokens": 4000,
            "stream": True,
            "messages": [{"role": "user", "content": "hi " * 200}],
        },
    )
    assert_openai_error(r, 400, "maximum context length")


def test_output_cap_applies(http: httpx.Client) -> None:
    # 16384 output tokens at most: asking for more is clamped, then checked against context.
    r = http.post(
        CHAT,
        json={
            "model": CHAT_MODEL,
            "max_tokens": 100000,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert_openai_error(r, 400, "16384")


def test_oversized_body_is_413(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b"x" * (33 * 1024 * 1024))
    assert r.status_code == 413
    assert "exceeds" in r.json()["error"]["message"]


def test_native_validation(http: httpx.Client) -> None:
    r = http.post(f"/v1/inference/{CHAT_MODEL}", json={"inputs": "wrong field"})
    assert r.status_code == 400 and "input" in r.json()["error"]["message"]
    r = http.post(f"/v1/inference/{EMBED_MODEL}", json={"inputs": []})
    assert r.status_code == 400
    r = http.post("/v1/openai/embeddings", json={"model": EMBED_MODEL, "input": [1, 2, 3]})
    assert_openai_error(r, 400, "token arrays")


def test_unknown_route_and_method(server: Server) -> None:
    r = httpx.get(server.url + "/v1/openai/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.get(server.url + CHAT)
    assert r.status_code == 405


def test_errors_leak_no_slot(http: httpx.Client) -> None:
    """Hundreds of refused requests later, a request still gets a slot (limit is 200)."""
    for _ in range(220):
        r = http.post(
            CHAT,
            json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi " * 5000}]},
        )
        assert r.status_code == 400
    r = http.post(
        CHAT,
        json={
            "model": CHAT_MODEL,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert r.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_stops_the_work(server: Server, stream: bool) -> None:
    body = {
        "model": CHAT_MODEL,
        "max_tokens": 3000,
        "stream": stream,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "Write a very long story."}],
    }
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(timeout=1.5) as c:
        if stream:
            with c.stream("POST", server.url + CHAT, json=body, headers=headers) as r:
                lines = r.iter_lines()
                for _ in range(3):
                    next(lines)
            # leaving the block closes the connection mid-stream
        else:
            with pytest.raises(httpx.ReadTimeout):
                c.post(server.url + CHAT, json=body, headers=headers)
    deadline = time.monotonic() + 5
    while server.metric("inferd_queue_depth", CHAT_MODEL) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.metric("inferd_queue_depth", CHAT_MODEL) == 0


def test_huge_numbers_are_400_not_500(http: httpx.Client) -> None:
    """The wire takes integers of any size; past 64 bits they are refused, not a crash."""
    huge = 10**30
    r = http.post(
        CHAT,
        json={
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            "top_k": huge,
        },
    )
    assert_openai_error(r, 400, "top_k")
    r = http.post(f"/v1/inference/{CHAT_MODEL}", json={"input": "x", "max_new_tokens": 2**64})
    assert_openai_error(r, 400, "max_new_tokens")
    assert_openai_error(http.post(CHAT, json={"model": CHAT_MODEL, "messages": []}), 400, "")
