"""The Ray backend's cost: the default chat model served by two inferd gateways on this
machine, one on the local backend (a worker process), one on the Ray backend (a Ray Serve
replica on a head node started here), driven side by side, round by round, with the same
streamed chat requests at concurrency 1 and 16.

Reported per level: generated tokens/s and median request latency of each, and the ratios
Ray ÷ local (tokens/s: higher is better; latency: lower is better), medians over ROUNDS rounds.
Every request generates exactly MAX_TOKENS tokens (`ignore_eos`).

Target: tokens/s through Ray ≥ 0.9x local at c=16.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import BENCH_KEY, free_port, start_inferd
from bench.llm_throughput import MODEL, PROMPTS, catalog_entry

MAX_TOKENS = 64
LEVELS = (1, 16)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HEAD_IP = "127.0.0.2"


def start_head() -> tuple[subprocess.Popen, str, Path]:
    temp = Path(tempfile.mkdtemp(prefix="inferd-ray-bench-", dir="/tmp"))
    port = free_port()
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--node-ip-address={HEAD_IP}",
            f"--port={port}",
            f"--temp-dir={temp}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return head, f"{HEAD_IP}:{port}", temp


async def level(url: str, concurrency: int) -> tuple[float, float]:
    """(tokens/s, median latency in ms) of `concurrency` streamed chats at once."""
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:

        async def one(i: int) -> float:
            started = time.perf_counter()
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": MAX_TOKENS,
                "ignore_eos": True,
                "temperature": 0.8,
                "seed": i,
                "stream": True,
            }
            async with client.stream("POST", "/v1/openai/chat/completions", json=body) as r:
                r.raise_for_status()
                async for _ in r.aiter_lines():
                    pass
            return time.perf_counter() - started

        started = time.perf_counter()
        latencies = await asyncio.gather(*(one(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return concurrency * MAX_TOKENS / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    head, address, temp = start_head()
    local = ray = None
    try:
        local_port, ray_port = free_port(), free_port()
        local = start_inferd(catalog_entry(), local_port)
        ray = start_inferd(
            catalog_entry(),
            ray_port,
            {"INFERD_BACKEND": "ray", "INFERD_RAY_ADDRESS": address},
        )
        servers = {
            "local": f"http://127.0.0.1:{local_port}",
            "ray": f"http://127.0.0.1:{ray_port}",
        }
        for url in servers.values():  # warm both
            asyncio.run(level(url, 2))
        print(f"{MODEL}, {MAX_TOKENS} tokens per request, {ROUNDS} rounds, medians")
        for concurrency in LEVELS:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
            for _ in range(ROUNDS):  # interleaved: both see the same machine state
                for name, url in servers.items():
                    runs[name].append(asyncio.run(level(url, concurrency)))
            tps = {n: statistics.median(r[0] for r in rs) for n, rs in runs.items()}
            p50 = {n: statistics.median(r[1] for r in rs) for n, rs in runs.items()}
            print(
                f"c={concurrency:<3} local {tps['local']:7.1f} tok/s p50 {p50['local']:7.0f} ms"
                f" | ray {tps['ray']:7.1f} tok/s p50 {p50['ray']:7.0f} ms"
                f" | ray/local tok/s {tps['ray'] / tps['local']:.2f}x,"
                f" p50 {p50['ray'] / p50['local']:.2f}x"
                + ("  (target >= 0.9x tok/s)" if concurrency == 16 else "")
            )
            print("   runs tok/s local", [round(r[0]) for r in runs["local"]])
            print("   runs tok/s ray  ", [round(r[0]) for r in runs["ray"]])
    finally:
        for server in (ray, local):
            if server is not None:
                server.stop()
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
