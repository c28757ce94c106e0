"""Turns generated token bytes into text pieces and applies stop strings.

Text that could still become a stop string is held back, so a client never receives any part
of a stop sequence, and every released token's text concatenates exactly to the final output.
"""

from __future__ import annotations

import codecs

from inferd.requests import Token


class TextAssembler:
    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[Token] = []
        self.text_parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def push(
        self, token_id: int, piece: bytes, logprob: float, special: bool
    ) -> tuple[list[Token], bool]:
        """Add one token; returns (released tokens, whether a stop string ended the text)."""
        self._pending.append(Token(token_id, self._decoder.decode(piece), logprob, special))
        if not self._stop:
            return self._release(len(self._pending)), False
        pending_text = "".join(item.text for item in self._pending)
        cut = min((i for i in (pending_text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            return self._release_until(cut), True
        hold = self._held_suffix(pending_text)
        return self._release_until(len(pending_text) - hold, whole_tokens_only=True), False

    def flush(self) -> list[Token]:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            if self._pending:
                self._pending[-1].text += tail
            else:
                self._pending.append(Token(-1, tail, 0.0, True))
        return self._release(len(self._pending))

    def _held_suffix(self, text: str) -> int:
        longest = 0
        for stop in self._stop:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest

    def _release(self, count: int) -> list[Token]:
        released, self._pending = self._pending[:count], self._pending[count:]
        self.text_parts.extend(item.text for item in released)
        return released

    def _release_until(self, limit: int, whole_tokens_only: bool = False) -> list[Token]:
        """Release pending text up to `limit` characters."""
        released: list[Token] = []
        consumed = 0
        for item in self._pending:
            end = consumed + len(item.text)
            if end <= limit:
                released.append(item)
            elif not whole_tokens_only and consumed < limit:
                cut = item.text[: limit - consumed]
                released.append(Token(item.id, cut, item.logprob, item.special))
                break
            else:
                break
            consumed = end
        if whole_tokens_only:
            self._pending = self._pending[len(released) :]
        else:
            self._pending = []
        self.text_parts.extend(item.text for item in released)
        return released
