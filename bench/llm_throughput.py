"""LLM throughput: aggregate generated tokens/s at concurrency 1, 4 and 16 for the default chat
model through inferd vs. `python -m llama_cpp.server` serving the same GGUF with the same
threads and flash-attention setting. Both go through their OpenAI chat endpoint over HTTP.

Targets: ≥ 0.9x at concurrency 1; ≥ 1.5x at concurrency 16.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from bench.common import BENCH_KEY, Process, free_port, start_inferd, wait_http
from inferd.catalog import Catalog
from inferd.catalog.weights import resolve_weights

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_TOKENS = 128
LEVELS = (1, 4, 16)
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "Describe your ideal weekend in detail.",
    "List some facts about the planet Mars and explain them.",
]


def catalog_entry() -> str:
    """The default catalog's chat model only, so no other worker shares the two cores."""
    text = Catalog.load(None)  # validates the packaged file
    spec = text.resolve(MODEL)
    return f"""
[[models]]
name = "{spec.name}"
task = "text-generation"
engine = "llm"
backend = "llamacpp"
weights = {{ package = "{spec.weights.package}", path = "{spec.weights.path}" }}
context_length = {spec.context_length}
options = {{ {", ".join(f"{k} = {str(v).lower()}" for k, v in spec.options.items())} }}
"""


async def run_level(base: str, headers: dict, concurrency: int, rounds: int) -> float:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:

        async def one(i: int) -> int:
            r = await client.post(
                "/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0.8,
                    "seed": i,
                },
            )
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        await one(0)  # warm-up
        started = time.perf_counter()
        tokens = 0
        for r in range(rounds):
            counts = await asyncio.gather(*(one(r * concurrency + i) for i in range(concurrency)))
            tokens += sum(counts)
        return tokens / (time.perf_counter() - started)


def measure(base: str, headers: dict) -> dict[int, float]:
    return {
        c: asyncio.run(run_level(base, headers, c, rounds=max(1, 16 // c) if c > 1 else 4))
        for c in LEVELS
    }


def main() -> None:
    spec = Catalog.load(None).resolve(MODEL)
    gguf = resolve_weights(spec.weights)
    threads = spec.options["n_threads"]

    port = free_port()
    inferd = start_inferd(catalog_entry(), port)
    try:
        ours = measure(
            f"http://127.0.0.1:{port}/v1/openai", {"Authorization": f"Bearer {BENCH_KEY}"}
        )
    finally:
        inferd.stop()

    peer_port = free_port()
    peer = Process(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--n_ctx",
            str(spec.context_length),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--flash_attn",
            "true",
            "--port",
            str(peer_port),
            "--model_alias",
            MODEL,
            "--verbose",
            "false",
        ]
    )
    try:
        wait_http(f"http://127.0.0.1:{peer_port}/v1/models")
        theirs = measure(f"http://127.0.0.1:{peer_port}/v1", {})
    finally:
        peer.stop()

    print(
        f"LLM throughput: {MODEL} (GGUF Q4_1), {MAX_TOKENS} tokens per request, "
        f"{threads} threads, aggregate generated tokens/s"
    )
    targets = {1: 0.9, 16: 1.5}
    for c in LEVELS:
        ratio = ours[c] / theirs[c]
        target = f"(target >= {targets[c]}x)" if c in targets else ""
        print(
            f"  concurrency {c:2d}   inferd {ours[c]:7.1f}   llama_cpp.server {theirs[c]:7.1f}   "
            f"ratio {ratio:.2f}x {target}"
        )


if __name__ == "__main__":
    main()
