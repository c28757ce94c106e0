"""Constrained decoding cost: generated tokens/s with a json_schema response_format vs.
unconstrained, same prompts, same server, concurrency 1 and 8.

Target: ≥ 0.8x.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import BENCH_KEY, free_port, start_inferd
from bench.llm_throughput import MODEL, catalog_entry

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "year": {"type": "integer"},
        "genres": {"type": "array", "items": {"type": "string", "maxLength": 20}},
        "summary": {"type": "string"},
    },
    "required": ["title", "year", "genres", "summary"],
}
PROMPTS = ["Describe a film as JSON.", "Describe a novel as JSON.", "Describe a play as JSON."]


async def tokens_per_second(port: int, concurrency: int, constrained: bool) -> float:
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}/v1/openai", headers=headers, timeout=600
    ) as client:

        async def one(i: int) -> int:
            body = {
                "model": MODEL,
                "max_tokens": 128,
                "temperature": 0.8,
                "seed": i,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "ignore_eos": not constrained,
            }
            if constrained:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "work", "schema": SCHEMA},
                }
            r = await client.post("/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        await one(0)
        # Closed loop: each client sends its next request when one returns, so the batch
        # stays full even though JSON answers end at different lengths.
        per_client = max(2, 8 // concurrency)
        counter = iter(range(10_000))

        async def client_loop() -> int:
            return sum([await one(next(counter)) for _ in range(per_client)])

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(client_loop() for _ in range(concurrency))))
        return tokens / (time.perf_counter() - started)


def main() -> None:
    port = free_port()
    server = start_inferd(catalog_entry(), port)
    try:
        rows = []
        for concurrency in (1, 8):
            free = asyncio.run(tokens_per_second(port, concurrency, False))
            json_ = asyncio.run(tokens_per_second(port, concurrency, True))
            rows.append((concurrency, free, json_))
    finally:
        server.stop()
    print(f"constrained decoding: {MODEL}, json_schema vs unconstrained, tokens/s")
    for concurrency, free, json_ in rows:
        print(
            f"  concurrency {concurrency}   json_schema {json_:7.1f}   unconstrained {free:7.1f}"
            f"   ratio {json_ / free:.2f}x (target >= 0.8x)"
        )


if __name__ == "__main__":
    main()
