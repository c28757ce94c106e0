"""Continuous batching over an LLMBackend.

One scheduler thread owns the model. Every step it feeds one decode token for each running
sequence plus prompt chunks of newly admitted ones into a single forward pass, so new requests
join a running batch and every sequence ends on its own (EOS, stop string, max tokens). When the
shared KV pool runs short, the newest sequence is preempted and later recomputed from its prompt
plus what it already generated; clients see no difference except latency.

LoRA adapters are loaded into the running model and chosen per request (`Generate.adapter`).
The backend applies an adapter to a whole forward pass, so a step runs one forward per adapter
among its sequences (the base's sequences form their own group). Every token of a sequence,
prompt and generated, recomputed or not, goes through its own group, so its KV cache is always
computed under its own adapter.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.base import Emit, Engine, EngineError, adapters_unsupported
from inferd.engines.llm.backend import ForwardEntry, LLMBackend
from inferd.engines.llm.chat_template import prepare_messages, render_chat
from inferd.engines.llm.constraints import apply_mask, compile_constraint
from inferd.engines.llm.sampler import apply_penalties, log_softmax_at, sample
from inferd.engines.llm.text import TextAssembler
from inferd.requests import (
    AdapterLoaded,
    AdapterUnloaded,
    ChatTurn,
    Finished,
    FinishReason,
    Generate,
    ModelInfo,
    PromptScores,
    SamplingParams,
    Started,
    Token,
    Tokens,
    TopToken,
    to_builtins,
)


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
    matcher: Any = None  # llguidance.LLMatcher when decoding is constrained
    score_prompt: bool = False  # prompt logprobs still to be reported
    prompt_scores: list[Token] = field(default_factory=list)
    media: Any = None  # images of a vision prompt (backend-specific, see encode_multimodal)
    adapter: str | None = None  # the LoRA adapter this sequence runs under; None: the base
    background: bool = False  # waits while interactive sequences run (batch lines)

    @property
    def prefilling(self) -> bool:
        return self.n_cached < len(self.feed) - 1


CLOSING_MARGIN = 24
CLOSING_BIAS = 12.0


SHORT_VALUES = frozenset({b":", b'":', b'":"', b"null", b"0", b'""', b"true", b"false"})


def closing_bias(piece: bytes) -> float:
    """How much a token helps finish a JSON structure (used near the token budget)."""
    core = piece.strip()
    if core and not core.strip(b'"}]'):
        return CLOSING_BIAS  # only closing characters: `"`, `}`, `]`, `"}`, ...
    if core in SHORT_VALUES:
        return CLOSING_BIAS / 2
    if any(c in core for c in (b",", b"{", b"[")):
        return -CLOSING_BIAS  # would open a new member or structure
    return 0.0


class LLMEngine(Engine[Generate]):
    def __init__(self, emit: Emit, backend: LLMBackend) -> None:
        super().__init__(emit)
        self.backend = backend
        pieces = [backend.token_bytes(t) for t in range(backend.n_vocab)]
        self._closing_bias = np.array([closing_bias(p) for p in pieces], dtype=np.float32)
        self._quote_led = np.array(
            [CLOSING_BIAS if p.strip().startswith(b'"') else 0.0 for p in pieces],
            dtype=np.float32,
        )
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._free_slots = list(range(backend.max_seqs - 1, -1, -1))
        self._order = itertools.count()
        # Adapter names as the worker's reader thread sees them (a load is counted from its
        # request, so requests sent right behind it are accepted), and the ones the backend
        # holds (scheduler thread only): a request whose adapter is not there is refused.
        self._adapter_names: set[str] = set()
        self._adapters_loaded: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llm-scheduler", daemon=True)
        self._thread.start()

    def info(self) -> ModelInfo:
        return ModelInfo(
            context_length=self.backend.context_length,
            max_seqs=self.backend.max_seqs,
            n_vocab=self.backend.n_vocab,
            features=sorted(
                {"chat", "completion", "streaming", "logprobs", "tools", "json_mode"}
                | ({"vision"} if self.backend.vision else set())
            ),
        )

    # -- requests (called on the worker's reader thread) ------------------------------------

    def submit(self, request_id: str, request: Generate) -> None:
        try:
            seq = self._prepare(request_id, request)
        except Exception as exc:
            self.fail(request_id, exc)
            return
        self.emit(request_id, Started(int(seq.prompt_ids.shape[0])))
        self._inbox.put(("submit", seq))
        self._wake.set()

    def cancel(self, request_id: str) -> None:
        self._inbox.put(("cancel", request_id))
        self._wake.set()

    def load_adapter(self, request_id: str, name: str, path: str) -> None:
        if not self.backend.adapters:
            self.fail(request_id, adapters_unsupported())
            return
        # Loaded by the scheduler thread, between steps: never during a forward pass.
        self._adapter_names.add(name)
        self._inbox.put(("load_adapter", (request_id, name, path)))
        self._wake.set()

    def unload_adapter(self, request_id: str, name: str) -> None:
        if not self.backend.adapters:
            self.fail(request_id, adapters_unsupported())
            return
        self._adapter_names.discard(name)
        self._inbox.put(("unload_adapter", (request_id, name)))
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.backend.close()

    def _prepare(self, request_id: str, request: Generate) -> Sequence:
        backend = self.backend
        params = request.params
        media = None
        if request.adapter is not None and request.adapter not in self._adapter_names:
            raise _unknown_adapter(request.adapter)
        if request.messages is not None:
            messages, extra = prepare_messages(
                backend.chat_template,
                [_template_message(m) for m in request.messages],
                request.tools,
                request.tool_prompt,
            )
            images = request.images
            if images and not backend.vision:
                raise EngineError("This model does not take images.", code="unsupported_content")
            if backend.vision:
                messages = [_with_parts(m) for m in messages]
            prompt = render_chat(
                backend.chat_template,
                messages,
                bos_token=backend.bos_token,
                eos_token=backend.eos_token,
                **extra,
            )
            # The template writes BOS itself when the model wants one.
            if backend.vision:
                ids, media = backend.encode_multimodal(prompt, images)
                if images and media is None:
                    raise EngineError(
                        "The chat template placed no image in the prompt.",
                        code="unsupported_content",
                    )
            else:
                ids = backend.tokenize(prompt, add_special=False)
        else:
            ids = backend.tokenize(request.prompt or "", add_special=backend.add_bos)
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
        matcher = None
        if params.constraint is not None:
            matcher = compile_constraint(backend.lltokenizer(), params.constraint)
        return Sequence(
            request_id=request_id,
            prompt_ids=np.asarray(ids, dtype=np.int64),
            params=params,
            max_tokens=max_tokens,
            rng=np.random.default_rng(params.seed),
            assembler=TextAssembler(params.stop),
            feed=list(ids),
            matcher=matcher,
            score_prompt=params.prompt_logprobs,
            media=media,
            adapter=request.adapter,
            background=request.background,
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
                if item.adapter is not None and item.adapter not in self._adapters_loaded:
                    self.fail(item.request_id, _unknown_adapter(item.adapter))  # load failed
                    continue
                item.order = next(self._order)
                self._waiting.append(item)
            elif kind == "cancel":
                self._drop(item)
            elif kind == "load_adapter":
                self._load_adapter(*item)
            else:
                self._unload_adapter(*item)

    def _load_adapter(self, request_id: str, name: str, path: str) -> None:
        try:
            if not Path(path).is_file():
                raise EngineError(
                    "The adapter file does not exist on the model's machine.",
                    status=404,
                    code="adapter_file_missing",
                )
            try:
                self.backend.load_adapter(name, Path(path))
            except ValueError as exc:
                raise EngineError(str(exc), code="invalid_adapter") from None
        except Exception as exc:
            if name not in self._adapters_loaded:
                self._adapter_names.discard(name)
            self.fail(request_id, exc)
            return
        self._adapters_loaded.add(name)
        self.emit(request_id, AdapterLoaded(name=name))

    def _unload_adapter(self, request_id: str, name: str) -> None:
        if name not in self._adapters_loaded:
            self.fail(request_id, _unknown_adapter(name))
            return
        gone = EngineError(
            f"The adapter `{name}` was unloaded while this request ran.",
            status=404,
            code="adapter_not_found",
        )
        for seq in [s for s in self._running if s.adapter == name]:
            self._finish(seq, error=gone)
        for seq in [s for s in self._waiting if s.adapter == name]:
            self._waiting.remove(seq)
            self.fail(seq.request_id, gone)
        self.backend.unload_adapter(name)
        self._adapters_loaded.discard(name)
        self.emit(request_id, AdapterUnloaded(name=name))

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
            # Interactive requests are admitted before background ones, in arrival order.
            seq = next((s for s in self._waiting if not s.background), self._waiting[0])
            # Leave room for one decode token per running sequence.
            need = len(seq.feed) + len(self._running) + 1
            if self._running and self._kv_used() + need > backend.kv_tokens:
                return
            self._waiting.remove(seq)
            seq.slot = self._free_slots.pop()
            seq.n_cached = 0
            self._running.append(seq)

    def _preempt_until_fits(self, step_tokens: int) -> None:
        while len(self._running) > 1 and self._kv_used() + step_tokens > self.backend.kv_tokens:
            victim = max(self._running, key=lambda s: (s.background, s.order))
            self._release(victim)
            self._waiting.appendleft(victim)
            step_tokens -= 1

    def _step(self) -> None:
        backend = self.backend
        self._preempt_until_fits(len(self._running))
        budget = backend.batch_tokens
        entries: list[ForwardEntry] = []
        owners: list[Sequence] = []
        # While interactive sequences run, background ones (batch lines) sit the step out,
        # keeping their KV cache: bulk work costs interactive latency nothing but a slot.
        stepping = [s for s in self._running if not s.background] or self._running
        # Decode tokens first: running generations keep their pace while prompts prefill.
        for seq in stepping:
            if not seq.prefilling and budget > 0:
                entries.append(
                    ForwardEntry(seq.slot, [seq.feed[-1]], seq.n_cached, True, seq.score_prompt)
                )
                owners.append(seq)
                budget -= 1
        for seq in stepping:
            if seq.prefilling and budget > 0:
                end = min(len(seq.feed), seq.n_cached + budget)
                last = end == len(seq.feed)
                entries.append(
                    ForwardEntry(
                        seq.slot,
                        seq.feed[seq.n_cached : end],
                        seq.n_cached,
                        last,
                        seq.score_prompt,
                        seq.media,
                    )
                )
                owners.append(seq)
                budget -= end - seq.n_cached
        if not entries:
            return
        groups: dict[str | None, list[int]] = {}
        for i, seq in enumerate(owners):
            groups.setdefault(seq.adapter, []).append(i)
        if len(groups) == 1:
            self._consume(entries, owners, backend.forward(entries, owners[0].adapter))
            return
        # One forward per adapter; the one applied now first (a switch re-plans the graph).
        active = backend.active_adapter
        for adapter in sorted(groups, key=lambda a: a != active):
            members = groups[adapter]
            part = [entries[i] for i in members]
            self._consume(part, [owners[i] for i in members], backend.forward(part, adapter))

    def _consume(
        self, entries: list[ForwardEntry], owners: list[Sequence], logits: np.ndarray
    ) -> None:
        """Feed one forward's logits rows (in entry order) to their sequences."""
        row = 0
        for entry, seq in zip(entries, owners, strict=True):
            seq.n_cached = entry.pos + len(entry.tokens)
            if entry.all_logits:
                rows = logits[row : row + len(entry.tokens)]
                row += len(entry.tokens)
                self._score_prompt(seq, entry, rows)
                if entry.want_logits:
                    self._advance(seq, rows[-1])
            elif entry.want_logits:
                self._advance(seq, logits[row])
                row += 1

    def _score_prompt(self, seq: Sequence, entry: ForwardEntry, rows: np.ndarray) -> None:
        """Row i predicts the token after position pos+i: collect those logprobs."""
        n_prompt = len(seq.prompt_ids)
        k = seq.params.top_logprobs
        for i, logits in enumerate(rows):
            target = entry.pos + i + 1
            if target >= n_prompt:
                break
            token = int(seq.prompt_ids[target])
            seq.prompt_scores.append(self._item(token, logits, k))
        if entry.pos + len(entry.tokens) >= n_prompt:
            first = int(seq.prompt_ids[0])
            head = Token(
                first,
                self.backend.token_bytes(first).decode("utf-8", "replace"),
                None,
                self.backend.is_special(first),
                [] if k else None,
            )
            self.emit(seq.request_id, PromptScores([head, *seq.prompt_scores]))
            seq.score_prompt = False
            seq.prompt_scores = []

    def _item(self, token: int, logits: np.ndarray, k: int) -> Token:
        backend = self.backend
        return Token(
            token,
            backend.token_bytes(token).decode("utf-8", "replace"),
            log_softmax_at(logits, token),
            backend.is_special(token),
            self._top(logits, k) if k else None,
        )

    def _top(self, logits: np.ndarray, k: int) -> list[TopToken]:
        peak = float(logits.max())
        lse = peak + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
        top = np.argpartition(logits, -k)[-k:]
        top = top[np.argsort(logits[top])[::-1]]
        return [
            TopToken(
                int(t),
                self.backend.token_bytes(int(t)).decode("utf-8", "replace"),
                float(logits[t]) - lse,
            )
            for t in top
        ]

    def _advance(self, seq: Sequence, logits: np.ndarray) -> None:
        params = seq.params
        scores = logits
        if params.penalised:
            scores = apply_penalties(logits, params, seq.prompt_ids, seq.output_ids)
        if seq.matcher is not None:
            scores = apply_mask(seq.matcher, scores, self.backend.n_vocab)
            remaining = seq.max_tokens - len(seq.output_ids)
            closing = remaining <= CLOSING_MARGIN and not seq.matcher.is_accepting()
        else:
            closing = False
        if closing:
            # Near the token budget, steer greedily to the end of the structure: closers first,
            # then short values, never a new member, so JSON finishes instead of being cut off.
            # Inside a string only a quote closes; outside one a quote would open a new key.
            quote = self._quote_led if self._in_string(seq) else -self._quote_led
            token = int(np.argmax(scores + self._closing_bias + quote))
        else:
            token = sample(scores, params, seq.rng)
        logprob = log_softmax_at(logits, token)
        top = self._top(logits, params.top_logprobs) if params.top_logprobs else None
        seq.output_ids.append(token)
        seq.feed.append(token)
        backend = self.backend
        grammar_done = False
        if seq.matcher is not None:
            seq.matcher.consume_token(token)
            grammar_done = seq.matcher.is_stopped()
        if backend.is_eog(token) and not params.ignore_eos:
            # The EOS token is reported (as TGI does: special, no text) but adds no text.
            eos = Token(token, "", logprob, True, top)
            self._emit_items(seq, [*seq.assembler.flush(), eos])
            self._finish(seq, reason="eos")
            return
        items, stopped = seq.assembler.push(
            token, backend.token_bytes(token), logprob, backend.is_special(token)
        )
        if top is not None:
            for item in items:
                item.top = top if item.id == token else []
        if stopped:
            self._emit_items(seq, items)
            self._finish(seq, reason="stop_sequence", last=Token(token, "", logprob, False))
            return
        out_of_room = len(seq.prompt_ids) + len(seq.output_ids) >= backend.context_length
        if grammar_done or len(seq.output_ids) >= seq.max_tokens or out_of_room:
            items += seq.assembler.flush()
            self._emit_items(seq, items)
            self._finish(seq, reason="eos" if grammar_done else "length")
            return
        self._emit_items(seq, items)

    def _in_string(self, seq: Sequence) -> bool:
        """Whether the JSON generated so far ends inside a string (odd unescaped quotes)."""
        text = b"".join(self.backend.token_bytes(t) for t in seq.output_ids)
        quotes, escaped = 0, False
        for byte in text:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                quotes += 1
        return quotes % 2 == 1

    def _emit_items(self, seq: Sequence, items: list[Token]) -> None:
        if items:
            self.emit(seq.request_id, Tokens(items))

    def _finish(
        self,
        seq: Sequence,
        reason: FinishReason = "length",
        error: BaseException | None = None,
        last: Token | None = None,
    ) -> None:
        self._release(seq)
        if error is not None:
            self.fail(seq.request_id, error)
            return
        self.emit(
            seq.request_id,
            Finished(
                finish_reason=reason,
                prompt_tokens=int(seq.prompt_ids.shape[0]),
                completion_tokens=len(seq.output_ids),
                last_token=last,
            ),
        )

    def _release(self, seq: Sequence) -> None:
        if seq in self._running:
            self._running.remove(seq)
            self.backend.release(seq.slot)
            self._free_slots.append(seq.slot)
            seq.slot = -1
            seq.n_cached = 0


def _unknown_adapter(name: str) -> EngineError:
    return EngineError(
        f"No adapter named `{name}` is loaded on this model.",
        status=404,
        code="adapter_not_found",
    )


def _template_message(turn: ChatTurn) -> dict[str, Any]:
    """A chat turn as chat templates take it (parts as `{"type": "text" | "image", ...}`)."""
    message = to_builtins(turn)
    message.setdefault("content", "")
    return message


def _with_parts(message: dict[str, Any]) -> dict[str, Any]:
    """Vision chat templates expect content as a list of parts, as the processor gives it."""
    content = message.get("content")
    if isinstance(content, list):
        return message
    return {**message, "content": [{"type": "text", "text": content or ""}]}
