"""Continuous batching over an LLMBackend.

One scheduler thread owns the model. Every step it feeds one decode token for each running
sequence plus prompt chunks of newly admitted ones into a single forward pass, so new requests
join a running batch and every sequence ends on its own (EOS, stop string, max tokens). When the
shared KV pool runs short, the newest sequence is preempted and later recomputed from its prompt
plus what it already generated; clients see no difference except latency.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferd.engines.base import Emit, Engine, EngineError
from inferd.engines.llm.backend import ForwardEntry, LLMBackend
from inferd.engines.llm.chat_template import render_chat
from inferd.engines.llm.params import SamplingParams
from inferd.engines.llm.sampler import apply_penalties, log_softmax_at, sample
from inferd.engines.llm.text import TextAssembler


@dataclass(slots=True)
class Sequence:
    request_id: str
    prompt_ids: np.ndarray
    params: SamplingParams
    max_tokens: int
    rng: np.random.Generator
    assembler: TextAssembler
    output_ids: list[int] = field(default_factory=list)
    slot: int = -1
    order: int = 0
    # Tokens the KV cache must hold before sampling: the prompt, then generated tokens as fed.
    feed: list[int] = field(default_factory=list)
    n_cached: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def prefilling(self) -> bool:
        return self.n_cached < len(self.feed) - 1


class LLMEngine(Engine):
    def __init__(self, emit: Emit, backend: LLMBackend) -> None:
        super().__init__(emit)
        self.backend = backend
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._free_slots = list(range(backend.max_seqs - 1, -1, -1))
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llm-scheduler", daemon=True)
        self._thread.start()

    def info(self) -> dict[str, Any]:
        return {
            "context_length": self.backend.context_length,
            "max_seqs": self.backend.max_seqs,
            "n_vocab": self.backend.n_vocab,
        }

    # -- requests (called on the worker's reader thread) ------------------------------------

    def submit(self, request_id: str, payload: dict[str, Any]) -> None:
        try:
            seq = self._prepare(request_id, payload)
        except Exception as exc:
            self.fail(request_id, exc)
            return
        self.emit(request_id, {"ev": "start", "prompt_tokens": int(seq.prompt_ids.shape[0])})
        self._inbox.put(("submit", seq))
        self._wake.set()

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("cancel", request_id))
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.backend.close()

    def _prepare(self, request_id: str, payload: dict[str, Any]) -> Sequence:
        backend = self.backend
        params = SamplingParams.from_dict(payload.get("params", {}))
        if payload.get("messages") is not None:
            prompt = render_chat(
                backend.chat_template,
                payload["messages"],
                bos_token=backend.bos_token,
                eos_token=backend.eos_token,
            )
            # The template writes BOS itself when the model wants one.
            ids = backend.tokenize(prompt, add_special=False)
        else:
            ids = backend.tokenize(payload.get("prompt", ""), add_special=backend.add_bos)
        if not ids:
            raise EngineError("The prompt is empty.", code="empty_prompt")
        n_prompt = len(ids)
        context = backend.context_length
        if n_prompt >= context:
            raise EngineError(
                f"This model's maximum context length is {context} tokens, but the prompt has "
                f"{n_prompt} tokens.",
                code="context_length_exceeded",
            )
        cap = params.max_output_tokens
        if params.max_tokens is None:
            max_tokens = min(cap, context - n_prompt, params.default_max_tokens or cap)
        else:
            max_tokens = min(params.max_tokens, cap)
            if n_prompt + max_tokens > context:
                raise EngineError(
                    f"This model's maximum context length is {context} tokens. However, you "
                    f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                    f"{max_tokens} for the completion). Please reduce the prompt or max_tokens.",
                    code="context_length_exceeded",
                )
        if max_tokens < 1:
            raise EngineError("max_tokens must be at least 1.", code="invalid_max_tokens")
        return Sequence(
            request_id=request_id,
            prompt_ids=np.asarray(ids, dtype=np.int64),
            params=params,
            max_tokens=max_tokens,
            rng=np.random.default_rng(params.seed),
            assembler=TextAssembler(params.stop),
            feed=list(ids),
        )

    # -- scheduler thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._drain_inbox()
            if not self._running and not self._waiting:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            self._admit()
            try:
                self._step()
            except Exception as exc:  # a backend failure fails the batch, not the worker
                for seq in list(self._running):
                    self._finish(seq, error=exc)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "submit":
                item.order = next(self._order)
                self._waiting.append(item)
            else:
                self._drop(item)

    def _drop(self, request_id: str) -> None:
        for seq in self._running:
            if seq.request_id == request_id:
                self._release(seq)
                return
        for seq in self._waiting:
            if seq.request_id == request_id:
                self._waiting.remove(seq)
                return

    def _kv_used(self) -> int:
        return sum(seq.n_cached for seq in self._running)

    def _admit(self) -> None:
        backend = self.backend
        while self._waiting and self._free_slots:
            seq = self._waiting[0]
            # Leave room for one decode token per running sequence.
            need = len(seq.feed) + len(self._running) + 1
            if self._running and self._kv_used() + need > backend.kv_tokens:
                return
            self._waiting.popleft()
            seq.slot = self._free_slots.pop()
            seq.n_cached = 0
            self._running.append(seq)

    def _preempt_until_fits(self, step_tokens: int) -> None:
        while len(self._running) > 1 and self._kv_used() + step_tokens > self.backend.kv_tokens:
            victim = max(self._running, key=lambda s: s.order)
            self._release(victim)
            self._waiting.appendleft(victim)
            step_tokens -= 1

    def _step(self) -> None:
        backend = self.backend
        self._preempt_until_fits(len(self._running))
        budget = backend.batch_tokens
        entries: list[ForwardEntry] = []
        sampled: list[Sequence] = []
        # Decode tokens first: running generations keep their pace while prompts prefill.
        for seq in self._running:
            if not seq.prefilling and budget > 0:
                entries.append(ForwardEntry(seq.slot, [seq.feed[-1]], seq.n_cached, True))
                sampled.append(seq)
                budget -= 1
        for seq in self._running:
            if seq.prefilling and budget > 0:
                end = min(len(seq.feed), seq.n_cached + budget)
                last = end == len(seq.feed)
                entries.append(
                    ForwardEntry(seq.slot, seq.feed[seq.n_cached : end], seq.n_cached, last)
                )
                budget -= end - seq.n_cached
                if last:
                    sampled.append(seq)
        if not entries:
            return
        logits = backend.forward(entries)
        for entry, seq in zip(entries, self._sequences_of(entries), strict=True):
            seq.n_cached = entry.pos + len(entry.tokens)
        for row, seq in zip(logits, sampled, strict=True):
            self._advance(seq, row)

    def _sequences_of(self, entries: list[ForwardEntry]) -> list[Sequence]:
        by_slot = {seq.slot: seq for seq in self._running}
        return [by_slot[e.slot] for e in entries]

    def _advance(self, seq: Sequence, logits: np.ndarray) -> None:
        params = seq.params
        scores = logits
        if params.penalised:
            scores = apply_penalties(logits, params, seq.prompt_ids, seq.output_ids)
        token = sample(scores, params, seq.rng)
        logprob = log_softmax_at(logits, token)
        seq.output_ids.append(token)
        seq.feed.append(token)
        backend = self.backend
        if backend.is_eog(token) and not params.ignore_eos:
            # The EOS token is reported (as TGI does: special, no text) but adds no text.
            self._emit_items(seq, [*seq.assembler.flush(), [token, "", logprob, True]])
            self._finish(seq, reason="eos")
            return
        items, stopped = seq.assembler.push(
            token, backend.token_bytes(token), logprob, backend.is_special(token)
        )
        if stopped:
            self._emit_items(seq, items)
            self._finish(seq, reason="stop_sequence", last=[token, logprob])
            return
        out_of_room = len(seq.prompt_ids) + len(seq.output_ids) >= backend.context_length
        if len(seq.output_ids) >= seq.max_tokens or out_of_room:
            items += seq.assembler.flush()
            self._emit_items(seq, items)
            self._finish(seq, reason="length")
            return
        self._emit_items(seq, items)

    def _emit_items(self, seq: Sequence, items: list) -> None:
        if items:
            self.emit(seq.request_id, {"ev": "tokens", "items": items})

    def _finish(
        self,
        seq: Sequence,
        reason: str = "",
        error: BaseException | None = None,
        last: list | None = None,
    ) -> None:
        self._release(seq)
        if error is not None:
            self.fail(seq.request_id, error)
            return
        self.emit(
            seq.request_id,
            {
                "ev": "done",
                "finish_reason": reason,
                "prompt_tokens": int(seq.prompt_ids.shape[0]),
                "completion_tokens": len(seq.output_ids),
                "last_token": last,
            },
        )

    def _release(self, seq: Sequence) -> None:
        if seq in self._running:
            self._running.remove(seq)
            self.backend.release(seq.slot)
            self._free_slots.append(seq.slot)
            seq.slot = -1
            seq.n_cached = 0
