"""LLM throughput: aggregate generated tokens/s at concurrency 1, 4 and 16 for the default chat
model, three ways, interleaved round by round:

- inferd, over its OpenAI chat endpoint;
- `python -m llama_cpp.server` serving the same GGUF with the same threads and flash attention;
- the physical limit: llama.cpp itself in this process, with the catalog entry's context and KV
  settings, decoding the same chat prompts (1 or 16 of them) one batch per step with greedy
  argmax over the logits: no HTTP, no scheduler, no sampling cost.

Every request generates exactly MAX_TOKENS tokens (`ignore_eos`; llama_cpp.server ignores the
field), so a c=16 round is 16 x MAX_TOKENS tokens whatever the sampler draws, as in-process.
Each level runs ROUNDS times and the median is reported, with every run.

Targets: vs llama_cpp.server ≥ 0.9x at c=1 and ≥ 1.5x at c=16; vs in-process ≥ 0.8x at c=16.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import BENCH_KEY, Process, free_port, start_inferd, wait_http
from inferd.catalog import Catalog
from inferd.weights.resolve import resolve_weights

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_TOKENS = 128
LEVELS = (1, 4, 16)
PHYSICAL_LEVELS = (1, 16)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
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
                    "ignore_eos": True,
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


def rounds_for(concurrency: int) -> int:
    return max(1, 16 // concurrency) if concurrency > 1 else 4


class InProcess:
    """llama.cpp driven directly through its C API, configured as LlamaCppBackend configures it
    from the catalog entry's options (split KV of kv_tokens / max_seqs cells per sequence, one
    ubatch of batch_tokens, n_threads, flash attention), written out here so the reference does
    not depend on the code it measures."""

    def __init__(self, gguf: Path, context_length: int, options: dict[str, Any]) -> None:
        import llama_cpp
        from llama_cpp import _internals

        from inferd.engines.llm.chat_template import render_chat
        from inferd.engines.llm.llamacpp_backend import _silence_llama_logs

        self.ll = llama_cpp
        _silence_llama_logs()
        llama_cpp.llama_backend_init()
        threads = int(options.get("n_threads") or os.cpu_count() or 1)
        max_seqs = int(options.get("max_seqs", 16))
        self.n_batch = int(options.get("batch_tokens", 512))
        unified = bool(options.get("kv_unified", False))
        kv_tokens = int(options.get("kv_tokens", 0))
        n_ctx = (
            max(kv_tokens, context_length)
            if unified
            else max(kv_tokens // max_seqs, 256) * max_seqs
        )
        self.model = _internals.LlamaModel(
            path_model=str(gguf), params=llama_cpp.llama_model_default_params(), verbose=False
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = max_seqs
        params.kv_unified = unified
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = 1 if options.get("flash_attn", True) else 0
        params.no_perf = True
        self.ctx = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.mem = llama_cpp.llama_get_memory(self.ctx.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_vocab = self.model.n_vocab()
        template = self.model.metadata().get("tokenizer.chat_template")
        bos = self.model.token_get_text(self.model.token_bos())
        eos = self.model.token_get_text(self.model.token_eos())
        self.prompts = [
            self.model.tokenize(
                render_chat(
                    template,
                    [{"role": "user", "content": p}],
                    bos_token=bos,
                    eos_token=eos,
                ).encode(),
                False,
                True,
            )
            for p in PROMPTS
        ]

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One llama_decode of (seq, pos, token, wants logits); the logits rows, in order."""
        batch = self.batch
        for n, (seq, pos, token, want) in enumerate(items):
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq
            batch.logits[n] = want
        batch.n_tokens = len(items)
        if self.ll.llama_decode(self.ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        n_out = sum(item[3] for item in items)
        logits = self.ll.llama_get_logits(self.ctx.ctx)
        return np.ctypeslib.as_array(logits, shape=(n_out, self.n_vocab))

    def run(self, n_seqs: int) -> float:
        """Generated tokens/s for n_seqs prompts, each prefilled then decoded MAX_TOKENS tokens,
        sequences in ascending ids (one ubatch per step under split KV)."""
        self.ll.llama_memory_clear(self.mem, True)
        prompts = [self.prompts[i % len(self.prompts)] for i in range(n_seqs)]
        started = time.perf_counter()
        # Prefill in chunks of n_batch tokens; each prompt's last token gives its first token.
        flat = [
            (seq, pos, token, pos == len(prompt) - 1)
            for seq, prompt in enumerate(prompts)
            for pos, token in enumerate(prompt)
        ]
        nxt = np.zeros(n_seqs, dtype=np.int64)
        for start in range(0, len(flat), self.n_batch):
            chunk = flat[start : start + self.n_batch]
            rows = self._decode(chunk)
            done = [seq for seq, _, _, last in chunk if last]
            if done:
                nxt[done] = rows.argmax(axis=1)
        for step in range(MAX_TOKENS - 1):
            rows = self._decode(
                [(seq, len(prompts[seq]) + step, int(nxt[seq]), True) for seq in range(n_seqs)]
            )
            nxt = rows.argmax(axis=1)
        return n_seqs * MAX_TOKENS / (time.perf_counter() - started)


def fmt(runs: list[float]) -> str:
    return f"{statistics.median(runs):7.1f} [{' '.join(f'{r:.0f}' for r in runs)}]"


def main() -> None:
    spec = Catalog.load(None).resolve(MODEL)
    gguf = resolve_weights(spec.weights)
    threads = spec.options["n_threads"]

    port = free_port()
    inferd = start_inferd(catalog_entry(), port)
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
    ours: dict[int, list[float]] = {c: [] for c in LEVELS}
    theirs: dict[int, list[float]] = {c: [] for c in LEVELS}
    physical: dict[int, list[float]] = {c: [] for c in PHYSICAL_LEVELS}
    try:
        wait_http(f"http://127.0.0.1:{peer_port}/v1/models")
        local = InProcess(gguf, spec.context_length, spec.options)
        # Interleaved: a burst of load from elsewhere on the machine hits all three alike.
        for _ in range(ROUNDS):
            for c in LEVELS:
                if c in PHYSICAL_LEVELS:
                    physical[c].append(local.run(c))
                ours[c].append(
                    asyncio.run(
                        run_level(
                            f"http://127.0.0.1:{port}/v1/openai",
                            {"Authorization": f"Bearer {BENCH_KEY}"},
                            c,
                            rounds_for(c),
                        )
                    )
                )
                theirs[c].append(
                    asyncio.run(run_level(f"http://127.0.0.1:{peer_port}/v1", {}, c, rounds_for(c)))
                )
    finally:
        inferd.stop()
        peer.stop()

    print(
        f"LLM throughput: {MODEL} (GGUF Q4_1), {MAX_TOKENS} tokens per request, "
        f"{threads} threads, aggregate generated tokens/s, median of {ROUNDS} [each run]"
    )
    targets = {1: 0.9, 16: 1.5}
    for c in LEVELS:
        ratio = statistics.median(ours[c]) / statistics.median(theirs[c])
        target = f"(target >= {targets[c]}x)" if c in targets else ""
        print(
            f"  concurrency {c:2d}   inferd {fmt(ours[c])}   llama_cpp.server {fmt(theirs[c])}   "
            f"ratio {ratio:.2f}x {target}"
        )
    for c in PHYSICAL_LEVELS:
        ratio = statistics.median(ours[c]) / statistics.median(physical[c])
        target = "(target >= 0.8x)" if c == 16 else ""
        print(
            f"  {c:2d} sequences   inferd c={c:<2d} {fmt(ours[c])}   "
            f"in-process batch {fmt(physical[c])}   ratio {ratio:.2f}x {target}"
        )


if __name__ == "__main__":
    main()
