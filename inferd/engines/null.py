"""An engine that answers at once: measures the gateway and runtime without model cost.

With `options.tokens` and `options.token_delay_ms` it streams that many tokens at that pace
instead (for limiter tests that need long-lived streams), on a timer thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from inferd.engines.base import Emit, Engine
from inferd.requests import (
    Embed,
    Embedded,
    Finished,
    Generate,
    ModelInfo,
    Started,
    Token,
    Tokens,
)

_OK = [Token(1, "ok", 0.0, False)]


class NullEngine(Engine[Generate | Embed]):
    def __init__(self, emit: Emit, options: dict[str, Any] | None = None) -> None:
        super().__init__(emit)
        options = options or {}
        self.tokens = int(options.get("tokens", 1))
        self.delay = float(options.get("token_delay_ms", 0)) / 1000.0
        self._cancelled: set[str] = set()

    def info(self) -> ModelInfo:
        return ModelInfo(context_length=2048, dimensions=8)

    def submit(self, request_id: str, request: Generate | Embed) -> None:
        if isinstance(request, Embed):
            n = len(request.texts)
            self.emit(request_id, Embedded(vectors=bytes(32 * n), dims=8, tokens=n))
            return
        self.emit(request_id, Started(1))
        if self.delay:
            threading.Thread(target=self._slow, args=(request_id,), daemon=True).start()
            return
        self.emit(request_id, Tokens(_OK))
        self._done(request_id, 1)

    def cancel(self, request_id: str) -> None:
        self._cancelled.add(request_id)

    def _slow(self, request_id: str) -> None:
        for _ in range(self.tokens):
            time.sleep(self.delay)
            if request_id in self._cancelled:
                self._cancelled.discard(request_id)
                return
            self.emit(request_id, Tokens(_OK))
        self._done(request_id, self.tokens)

    def _done(self, request_id: str, n: int) -> None:
        self.emit(
            request_id, Finished(finish_reason="length", prompt_tokens=1, completion_tokens=n)
        )
