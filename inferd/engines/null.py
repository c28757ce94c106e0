"""An engine that answers at once: measures the gateway and runtime without model cost."""

from __future__ import annotations

from typing import Any

from inferd.engines.base import Engine


class NullEngine(Engine):
    def info(self) -> dict[str, Any]:
        return {"context_length": 2048}

    def submit(self, request_id: str, payload: dict[str, Any]) -> None:
        if payload.get("kind") == "embed":
            n = len(payload["texts"])
            self.emit(request_id, {"ev": "result", "embeddings": [[0.0] * 8] * n, "tokens": n})
            return
        self.emit(request_id, {"ev": "start", "prompt_tokens": 1})
        self.emit(request_id, {"ev": "tokens", "items": [[1, "ok", 0.0, False]]})
        self.emit(
            request_id,
            {"ev": "done", "finish_reason": "eos", "prompt_tokens": 1, "completion_tokens": 1},
        )
