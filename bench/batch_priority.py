"""Batches run below interactive traffic: the p50 latency of interactive chat requests while a
batch runs on the same model, against the same requests with no batch, measured side by side in
one run (rounds alternate: quiet, batch, quiet, batch, ...; medians over the rounds).

SmolLM2-135M on llama.cpp (the packaged catalog's first model), interactive requests one at a
time with a pause between them (a user, not a load test), the batch a few hundred long lines.
Target: the batch raises the interactive p50 by at most 20% (ratio <= 1.2).
"""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import httpx
from openai import OpenAI

from bench.common import BENCH_KEY, free_port, start_inferd

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROUNDS = 3
REQUESTS_PER_ROUND = 12
PAUSE_S = 0.3
CATALOG = (Path(__file__).parents[1] / "inferd" / "catalog" / "default.toml").read_text()
FIRST_MODEL = CATALOG.split("\n[[models]]\n")[1]  # SmolLM2, the first entry


def interactive(client: httpx.Client) -> list[float]:
    latencies = []
    for i in range(REQUESTS_PER_ROUND):
        started = time.perf_counter()
        reply = client.post(
            "/v1/openai/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Give me a word for {i}."}],
                "max_tokens": 16,
                "temperature": 0,
            },
        )
        assert reply.status_code == 200, reply.text
        latencies.append(time.perf_counter() - started)
        time.sleep(PAUSE_S)
    return latencies


def start_batch(sdk: OpenAI, lines: int) -> str:
    body = "".join(
        json.dumps(
            {
                "custom_id": f"l{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Tell a long story about {i}."}],
                    "max_tokens": 128,
                },
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()
    data = io.BytesIO(body)
    data.name = "bench.jsonl"
    upload = sdk.files.create(file=data, purpose="batch")
    batch = sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while sdk.batches.retrieve(batch.id).request_counts.completed < 1:  # lines are running
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return batch.id


def main() -> None:
    port = free_port()
    server = start_inferd("[[models]]\n" + FIRST_MODEL, port, {"INFERD_BATCH_CONCURRENCY": "4"})
    base = f"http://127.0.0.1:{port}"
    sdk = OpenAI(api_key=BENCH_KEY, base_url=base + "/v1/openai", max_retries=0)
    quiet: list[float] = []
    busy: list[float] = []
    lines_done = 0
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {BENCH_KEY}"}, timeout=120
        ) as client:
            interactive(client)  # warm-up
            for _ in range(ROUNDS):
                quiet.append(statistics.median(interactive(client)))
                batch_id = start_batch(sdk, 300)
                busy.append(statistics.median(interactive(client)))
                batch = sdk.batches.cancel(batch_id)
                while batch.status != "cancelled":
                    time.sleep(0.2)
                    batch = sdk.batches.retrieve(batch_id)
                lines_done += batch.request_counts.completed
    finally:
        server.stop()
    q, b = statistics.median(quiet), statistics.median(busy)
    print(f"batch priority: {MODEL}, interactive p50 of {REQUESTS_PER_ROUND} requests per round")
    print(f"  quiet  p50 {q * 1000:.0f} ms   (rounds: {[round(x * 1000) for x in quiet]})")
    print(f"  batch  p50 {b * 1000:.0f} ms   (rounds: {[round(x * 1000) for x in busy]})")
    print(f"  ratio  {b / q:.2f}x  (target <= 1.20x); batch lines finished meanwhile: {lines_done}")


if __name__ == "__main__":
    main()
