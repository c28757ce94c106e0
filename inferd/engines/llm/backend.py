"""What the scheduler needs from a model: tokens in, logits out, per-sequence KV slots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class ForwardEntry:
    """Tokens of one sequence to feed in this step, starting at position `pos`."""

    slot: int
    tokens: list[int]
    pos: int
    want_logits: bool
    all_logits: bool = False  # one row per token (prompt scoring), else the last only


class LLMBackend(ABC):
    """A loaded causal LM with `max_seqs` independent KV slots."""

    n_vocab: int
    context_length: int
    max_seqs: int
    kv_tokens: int  # KV cells shared by all slots
    batch_tokens: int  # most tokens one forward step takes
    add_bos: bool
    bos_token: str
    eos_token: str
    chat_template: str | None

    @abstractmethod
    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes: ...

    @abstractmethod
    def is_eog(self, token_id: int) -> bool:
        """End of generation (EOS, EOT, ...)."""

    @abstractmethod
    def is_special(self, token_id: int) -> bool: ...

    @abstractmethod
    def forward(self, entries: list[ForwardEntry]) -> np.ndarray:
        """Run one batched step. Returns logits rows in entry order: every token's row for
        entries with all_logits, the last token's row for entries with want_logits."""

    @abstractmethod
    def lltokenizer(self):
        """The llguidance tokenizer for constrained decoding (built once, cached)."""

    @abstractmethod
    def release(self, slot: int) -> None:
        """Forget a slot's KV cache."""

    def close(self) -> None:  # noqa: B027
        pass
