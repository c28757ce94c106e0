"""Embeddings: texts/s at concurrency 16 (one text per request) through inferd vs.
sentence-transformers called directly in one process with the same batch size (16).

Target: ≥ 0.95x.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from bench.common import BENCH_KEY, Connection, free_port, start_inferd
from inferd.catalog import Catalog
from inferd.weights.resolve import resolve_weights

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CONCURRENCY = 16
WAIT_MS = int(__import__("os").environ.get("WAIT_MS", "2"))
TOTAL = 2048
ROUNDS = 3
TEXTS = [f"Sentence number {i} about embeddings, search and retrieval." for i in range(TOTAL)]


def catalog_entry(threads: int) -> str:
    spec = Catalog.load(None).resolve(MODEL)
    return f"""
[[models]]
name = "{spec.name}"
task = "embeddings"
engine = "embeddings"
weights = {{ package = "{spec.weights.package}", path = "{spec.weights.path}" }}
context_length = {spec.context_length}
options = {{ n_threads = {threads}, max_batch = {CONCURRENCY}, batch_wait_ms = {WAIT_MS} }}
"""


async def through_inferd(port: int) -> float:
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    path = f"/v1/inference/{MODEL}"
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in TEXTS:
        queue.put_nowait(text)
    conns = [Connection(port) for _ in range(CONCURRENCY)]
    await asyncio.gather(*(c.open() for c in conns))

    async def worker(conn: Connection) -> None:
        while not queue.empty():
            await conn.post(path, {"inputs": [queue.get_nowait()]}, headers)

    await conns[0].post(path, {"inputs": ["warm-up"]}, headers)
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return TOTAL / (time.perf_counter() - started)


class Direct:
    """sentence-transformers in this process, loaded once, measured between inferd rounds."""

    def __init__(self, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        spec = Catalog.load(None).resolve(MODEL)
        self.model = SentenceTransformer(str(resolve_weights(spec.weights)), device="cpu")
        self.model.encode(TEXTS[:CONCURRENCY], batch_size=CONCURRENCY)

    def run(self) -> float:
        started = time.perf_counter()
        self.model.encode(TEXTS, batch_size=CONCURRENCY, show_progress_bar=False)
        return TOTAL / (time.perf_counter() - started)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = Catalog.load(None).resolve(MODEL).options.get("n_threads", 1)
    port = free_port()
    server = start_inferd(catalog_entry(threads), port)
    ours, theirs = [], []
    try:
        direct = Direct(threads)
        for _ in range(ROUNDS):  # interleaved: the machine's noise hits both sides alike
            ours.append(asyncio.run(through_inferd(port)))
            theirs.append(direct.run())
    finally:
        server.stop()
    median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
    print(
        f"embeddings: {MODEL}, {TOTAL} texts, one text per request at concurrency "
        f"{CONCURRENCY} vs encode(batch_size={CONCURRENCY}) in-process, {threads} threads, "
        f"median of {ROUNDS} interleaved rounds"
    )
    print(
        f"  texts/s   inferd {median_ours:7.1f} {[round(x) for x in ours]}   "
        f"direct {median_theirs:7.1f} {[round(x) for x in theirs]}   "
        f"ratio {median_ours / median_theirs:.2f}x (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
