"""Continuous batching: a new request joins a running batch and ends on its own."""

from __future__ import annotations

import threading
import time

from openai import OpenAI

from tests.conftest import CHAT_MODEL


def test_new_request_joins_a_running_generation(client: OpenAI) -> None:
    marks: dict[str, float] = {}
    long_started = threading.Event()

    def long_request() -> None:
        stream = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Tell a long story."}],
            max_tokens=200,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                long_started.set()
        marks["long_done"] = time.monotonic()

    thread = threading.Thread(target=long_request)
    thread.start()
    assert long_started.wait(60)
    short = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=5,
        extra_body={"ignore_eos": True},
    )
    marks["short_done"] = time.monotonic()
    thread.join(120)
    assert short.usage.completion_tokens == 5
    # The short request did not queue behind the long one: it finished first.
    assert marks["short_done"] < marks["long_done"]


def test_concurrent_requests_each_end_on_their_own(client: OpenAI) -> None:
    results: dict[int, object] = {}

    def run(n: int) -> None:
        results[n] = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": f"Count to {n}."}],
            max_tokens=n * 4,
            temperature=0.7,
            seed=n,
            extra_body={"ignore_eos": True},
        )

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 3, 5, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for n, completion in results.items():
        assert completion.usage.completion_tokens == n * 4
        assert completion.choices[0].finish_reason == "length"
