"""A worker killed with SIGKILL fails its in-flight requests fast and is restarted."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx

from tests.conftest import CHAT_MODEL, Server


def test_sigkill_mid_stream(server: Server, http: httpx.Client) -> None:
    before = server.metric("inferd_worker_restarts_total", CHAT_MODEL)
    [pid] = server.worker_pids(CHAT_MODEL)
    body = {
        "model": CHAT_MODEL,
        "max_tokens": 2000,
        "stream": True,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }
    with http.stream("POST", "/v1/openai/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line]
        assert received and received[0].startswith("data: ")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        rest = [line for line in lines if line]
        ended_after = time.monotonic() - killed_at
    assert ended_after < 1.0, f"stream ended {ended_after:.2f}s after the kill"
    assert rest[-1] == "data: [DONE]"
    error = json.loads(rest[-2][len("data: ") :])["error"]
    assert "worker" in error["message"] and error["code"] == "worker_crashed"

    # The next request waits for the restarted worker and succeeds.
    r = http.post("/v1/openai/chat/completions", json={**body, "stream": False, "max_tokens": 4})
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] == 4
    assert server.metric("inferd_worker_restarts_total", CHAT_MODEL) == before + 1
    [new_pid] = server.worker_pids(CHAT_MODEL)
    assert new_pid != pid


def test_sigkill_fails_non_streaming_with_5xx(server: Server, http: httpx.Client) -> None:
    import threading

    [pid] = server.worker_pids(CHAT_MODEL)
    result: dict = {}

    def call() -> None:
        result["response"] = http.post(
            f"/v1/inference/{CHAT_MODEL}",
            json={"input": "Once upon a time", "max_new_tokens": 2000, "ignore_eos": True},
        )
        result["at"] = time.monotonic()

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    response = result["response"]
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "worker_crashed"
    assert result["at"] - killed_at < 1.0
    # and the worker comes back
    r = http.post(f"/v1/inference/{CHAT_MODEL}", json={"input": "Hi", "max_new_tokens": 2})
    assert r.status_code == 200
