"""What the scheduler needs from a model: tokens in, logits out, per-sequence KV slots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(slots=True)
class ForwardEntry:
    """Tokens of one sequence to feed in this step, starting at position `pos`."""

    slot: int
    tokens: list[int]
    pos: int
    want_logits: bool
    all_logits: bool = False  # one row per token (prompt scoring), else the last only
    media: Any = None  # the sequence's images (vision backends), as encode_multimodal made them


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
    vision: bool = False  # takes images in chat messages (encode_multimodal)
    adapters: bool = False  # takes LoRA adapters at run time (load_adapter)
    active_adapter: str | None = None  # the adapter the model applies now, if any

    @abstractmethod
    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    def encode_multimodal(self, prompt: str, images: list[bytes]) -> tuple[list[int], Any]:
        """Token ids of a rendered prompt whose image placeholders are expanded, and the
        media object that forward() reads the image features from."""
        raise NotImplementedError("this backend does not take images")

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes: ...

    @abstractmethod
    def is_eog(self, token_id: int) -> bool:
        """End of generation (EOS, EOT, ...)."""

    @abstractmethod
    def is_special(self, token_id: int) -> bool: ...

    @abstractmethod
    def forward(self, entries: list[ForwardEntry], adapter: str | None = None) -> np.ndarray:
        """Run one batched step, with the named LoRA adapter applied (None: the base alone).
        Returns logits rows in entry order: every token's row for entries with all_logits,
        the last token's row for entries with want_logits."""

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA adapter file under `name` (replacing one of that name); ValueError
        when the file does not fit this model."""
        raise NotImplementedError("this backend does not take adapters")

    def unload_adapter(self, name: str) -> None:
        """Forget an adapter; KeyError when none has that name."""
        raise NotImplementedError("this backend does not take adapters")

    @abstractmethod
    def lltokenizer(self):
        """The llguidance tokenizer for constrained decoding (built once, cached)."""

    @abstractmethod
    def release(self, slot: int) -> None:
        """Forget a slot's KV cache."""

    def close(self) -> None:  # noqa: B027
        pass
