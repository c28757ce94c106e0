"""llama.cpp (GGUF) backend through llama-cpp-python's low-level API.

The high-level `Llama` class decodes one sequence at a time; here one context holds `max_seqs`
sequences and a single `llama_decode` call carries tokens of all of them.

Split KV (the default) gives every llama.cpp sequence id its own KV stream, and llama.cpp cuts a
batch into ubatches that each span *consecutive* sequence ids in ascending batch order
(`llama_batch_allocr::split_equal(..., sequential=true)`); every ubatch is a full pass over the
weights. A batch whose ids come in another order or with holes therefore runs as several passes:
16 decode tokens in descending id order cost 16 single-token passes, half the speed of one
16-token pass. So the backend keeps its own sequence ids packed (0..n-1, a finished sequence's
hole is filled by moving the highest one down) and feeds every batch sorted by id, whatever slot
numbers and order the scheduler uses.

LoRA adapters (GGUF LoRA files) are loaded into the running model and applied per context, not
per sequence: `forward` sets the adapter its entries run under before the decode (scale 1.0) and
clears it for the base. llama.cpp re-plans its graph when the set changes, so the engine runs
the currently applied adapter's group first.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.llm.backend import ForwardEntry, LLMBackend


def _silence_llama_logs() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _drop(level, text, user_data):  # pragma: no cover - C callback
        return None

    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))
    _silence_llama_logs.keep = _drop  # type: ignore[attr-defined]  # keep the callback alive


class LlamaCppBackend(LLMBackend):
    adapters = True

    def __init__(self, model_path: Path, context_length: int, options: dict[str, Any]) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._ll = llama_cpp
        _silence_llama_logs()
        llama_cpp.llama_backend_init()
        threads = int(options.get("n_threads") or os.cpu_count() or 1)
        self.max_seqs = int(options.get("max_seqs", 16))
        self.batch_tokens = int(options.get("batch_tokens", 512))

        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = int(options.get("n_gpu_layers", 0))
        self._model = _internals.LlamaModel(
            path_model=str(model_path), params=model_params, verbose=False
        )
        trained = self._model.n_ctx_train()
        context_length = min(context_length, trained) if trained > 0 else context_length
        # Unified KV: one pool all sequences share (attention then spans the whole pool, which
        # costs O(seqs x pool) per step). Split KV (default): each slot owns kv_tokens/max_seqs
        # cells and attends to its own only: measured 35% faster at 16 sequences x 250 tokens.
        unified = bool(options.get("kv_unified", False))
        kv_tokens = int(options.get("kv_tokens", 0))
        if unified:
            self.context_length = context_length
            self.kv_tokens = max(kv_tokens, context_length)
        else:
            per_seq = max(kv_tokens // self.max_seqs, 256)
            self.context_length = min(context_length, per_seq)
            self.kv_tokens = per_seq * self.max_seqs

        # Engine slot -> llama.cpp sequence id, and the reverse (None: id free). Identity when
        # unified: one stream takes any ids in any order (llama_batch_allocr::split_simple).
        self._packed = not unified
        self._seq_of: dict[int, int] = {}
        self._slot_of: list[int | None] = [None] * self.max_seqs
        self._state_buf = bytearray()
        self._can_move = True
        self.moves = 0  # sequences moved to fill a hole (diagnostics, tests)

        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = self.kv_tokens
        ctx_params.n_batch = self.batch_tokens
        ctx_params.n_ubatch = self.batch_tokens
        ctx_params.n_seq_max = self.max_seqs
        ctx_params.kv_unified = unified
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        # Flash attention: measured ~10% faster single-stream and ~25% faster batched on CPU.
        ctx_params.flash_attn_type = 1 if options.get("flash_attn", True) else 0
        self._ctx = _internals.LlamaContext(model=self._model, params=ctx_params, verbose=False)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, 1)

        vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        self._pieces = [self._piece(vocab, t) for t in range(self.n_vocab)]
        self._eog = np.array([llama_cpp.llama_vocab_is_eog(vocab, t) for t in range(self.n_vocab)])
        self._control = np.array(
            [llama_cpp.llama_vocab_is_control(vocab, t) for t in range(self.n_vocab)]
        )
        self.add_bos = bool(self._model.add_bos_token())
        metadata = self._model.metadata()
        self.chat_template = metadata.get("tokenizer.chat_template")
        self.bos_token = self._special_text(self._model.token_bos())
        self.eos_token = self._special_text(self._model.token_eos())
        self._lltok = None
        self._adapters: dict[str, Any] = {}  # name -> llama_adapter_lora pointer
        self.active_adapter: str | None = None  # what the context applies now

    def _piece(self, vocab, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def _special_text(self, token: int) -> str:
        return self._model.token_get_text(token) if token >= 0 else ""

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_special, True)

    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces[token_id]

    def is_eog(self, token_id: int) -> bool:
        return bool(self._eog[token_id])

    def is_special(self, token_id: int) -> bool:
        return bool(self._control[token_id])

    def _seq_id(self, slot: int) -> int:
        if not self._packed:
            return slot
        seq = self._seq_of.get(slot)
        if seq is None:
            seq = self._slot_of.index(None)  # the lowest free id keeps the ids packed
            self._seq_of[slot] = seq
            self._slot_of[seq] = slot
        return seq

    def load_adapter(self, name: str, path: Path) -> None:
        adapter = self._ll.llama_adapter_lora_init(self._model.model, str(path).encode())
        if not adapter:  # llama.cpp logs why (silenced); the usual cause is a wrong base
            raise ValueError("The adapter file could not be loaded for this model.")
        old = self._adapters.get(name)
        self._adapters[name] = adapter
        if old is not None:
            self._free_adapter(name, old)

    def unload_adapter(self, name: str) -> None:
        self._free_adapter(name, self._adapters.pop(name))

    def _free_adapter(self, name: str, adapter: Any) -> None:
        if self.active_adapter == name:
            self._apply(None)  # the context must not point at a freed adapter
        self._ll.llama_adapter_lora_free(adapter)

    def _apply(self, name: str | None) -> None:
        ll = self._ll
        if name is None:
            status = ll.llama_set_adapters_lora(self._ctx.ctx, None, 0, None)
        else:
            adapters = (ll.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
            scales = (ctypes.c_float * 1)(1.0)
            status = ll.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales)
        if status != 0:
            raise RuntimeError(f"llama_set_adapters_lora failed with status {status}")
        self.active_adapter = name

    def forward(self, entries: list[ForwardEntry], adapter: str | None = None) -> np.ndarray:
        if adapter != self.active_adapter:
            self._apply(adapter)
        batch = self._batch
        ids = [self._seq_id(entry.slot) for entry in entries]  # new sequences take holes first
        if self._packed:
            self._pack()
            ids = [self._seq_of[entry.slot] for entry in entries]
        # Ascending ids, so consecutive ids share a ubatch (see the module docstring).
        order = sorted(range(len(entries)), key=ids.__getitem__)
        n = 0
        n_out = 0
        first_row = [0] * len(entries)  # where each entry's logits rows start in llama's output
        for k in order:
            entry = entries[k]
            seq = ids[k]
            first_row[k] = n_out
            last = len(entry.tokens) - 1
            for i, token in enumerate(entry.tokens):
                batch.token[n] = token
                batch.pos[n] = entry.pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                want = entry.all_logits or (entry.want_logits and i == last)
                batch.logits[n] = want
                n_out += want
                n += 1
        batch.n_tokens = n
        status = self._ll.llama_decode(self._ctx.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        if n_out == 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        # llama_get_logits: every output row, in batch order, one contiguous block.
        out = np.ctypeslib.as_array(
            self._ll.llama_get_logits(self._ctx.ctx), shape=(n_out, self.n_vocab)
        )
        rows: list[int] = []
        for k, entry in enumerate(entries):
            count = len(entry.tokens) if entry.all_logits else int(entry.want_logits)
            rows.extend(range(first_row[k], first_row[k] + count))
        if rows == list(range(n_out)):
            return out.copy()
        return out[rows]  # back to the caller's entry order (fancy indexing copies)

    def lltokenizer(self):
        if self._lltok is None:
            import llguidance.llamacpp

            self._lltok = llguidance.llamacpp.lltokenizer_from_vocab(self._model.vocab)
        return self._lltok

    def release(self, slot: int) -> None:
        if not self._packed:
            self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
            return
        seq = self._seq_of.pop(slot, None)
        if seq is not None:  # None: released before its first step
            self._ll.llama_memory_seq_rm(self._mem, seq, -1, -1)
            self._slot_of[seq] = None
        # The hole is filled at the next forward (_pack), by then either a new sequence has
        # taken it or every sequence finishing in this step is gone and none is moved in vain.

    def _pack(self) -> None:
        """Close holes in the ids in use by moving the highest sequences down."""
        while self._can_move:
            used = [i for i, s in enumerate(self._slot_of) if s is not None]
            if not used or used[-1] < len(used):
                return  # packed
            self._can_move = self._move(used[-1], self._slot_of.index(None))

    def _move(self, src: int, dst: int) -> bool:
        """Move sequence `src` to the free id `dst`. Copies only the cells it holds (~23 kB a
        token for SmolLM2-135M: ~4 MB, ~1 ms, for a 170-token sequence), less than the extra
        weight pass a hole costs at every step it stays open."""
        ll, ctx = self._ll, self._ctx.ctx
        size = ll.llama_state_seq_get_size(ctx, src)
        if len(self._state_buf) < size:
            self._state_buf = bytearray(size)
        buf = (ctypes.c_uint8 * size).from_buffer(self._state_buf)
        if ll.llama_state_seq_get_data(ctx, buf, size, src) == 0 or (
            ll.llama_state_seq_set_data(ctx, buf, size, dst) == 0
        ):
            ll.llama_memory_seq_rm(self._mem, dst, -1, -1)
            return False  # the sequence stays where it is: slower, still correct
        ll.llama_memory_seq_rm(self._mem, src, -1, -1)
        slot = self._slot_of[src]
        assert slot is not None
        self._slot_of[src] = None
        self._slot_of[dst] = slot
        self._seq_of[slot] = dst
        self.moves += 1
        return True

    def close(self) -> None:
        for name in list(self._adapters):
            self.unload_adapter(name)
        self._ll.llama_batch_free(self._batch)
        self._ctx.close()
        self._model.close()
