"""Sentence embeddings with dynamic batching.

Requests queue up while a batch runs; the next batch takes every queued text up to
`max_batch`, waiting at most `batch_wait_ms` for more once the first arrives.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from inferd.engines.base import Emit, Engine, EngineError
from inferd.engines.batching import take_batch
from inferd.requests import Embed, Embedded, ModelInfo


class EmbeddingsEngine(Engine[Embed]):
    def __init__(self, emit: Emit, model_path: Path, context_length: int, options: dict) -> None:
        super().__init__(emit)
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(int(options.get("n_threads", 1)))
        self.model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
        self.model.max_seq_length = min(self.model.max_seq_length or context_length, context_length)
        self.max_batch = int(options.get("max_batch", 64))
        self.batch_wait = float(options.get("batch_wait_ms", 2)) / 1000.0
        self.batch_max_wait = float(options.get("batch_max_wait_ms", 10)) / 1000.0
        self.max_inputs = int(options.get("max_inputs", 2048))
        self._queue: queue.SimpleQueue[tuple[str, list[str], bool] | None] = queue.SimpleQueue()
        self._last_batch = 0
        self._thread = threading.Thread(target=self._loop, name="embed-batcher", daemon=True)
        self._thread.start()

    def info(self) -> ModelInfo:
        return ModelInfo(
            context_length=self.model.max_seq_length,
            dimensions=self.model.get_embedding_dimension(),
        )

    def submit(self, request_id: str, request: Embed) -> None:
        texts = request.texts
        if not texts:
            self.fail(request_id, EngineError("input must be a non-empty list of strings"))
            return
        if len(texts) > self.max_inputs:
            self.fail(request_id, EngineError(f"at most {self.max_inputs} inputs per request"))
            return
        self._queue.put((request_id, texts, request.normalize))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take_batch(self) -> list[tuple[str, list[str], bool]] | None:
        batch = take_batch(
            self._queue,
            max_size=self.max_batch,
            gap_s=self.batch_wait,
            max_wait_s=self.batch_max_wait,
            size=lambda item: len(item[1]),
            expect=self._last_batch,
        )
        self._last_batch = sum(len(texts) for _, texts, _ in batch) if batch else 0
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            texts = [t for _, ts, _ in batch for t in ts]
            try:
                vectors, lengths = self._encode(texts)
            except Exception as exc:
                for request_id, _, _ in batch:
                    self.fail(request_id, exc)
                continue
            start = 0
            for request_id, ts, normalize in batch:
                rows = np.ascontiguousarray(vectors[start : start + len(ts)], dtype=np.float32)
                if normalize:
                    norms = np.linalg.norm(rows, axis=1, keepdims=True)
                    rows = rows / np.maximum(norms, 1e-12)
                tokens = int(sum(lengths[start : start + len(ts)]))
                start += len(ts)
                self.emit(
                    request_id,
                    Embedded(vectors=rows.tobytes(), dims=rows.shape[1], tokens=tokens),
                )

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """One tokenization gives both the vectors and the token counts billed."""
        import torch

        vectors, lengths = [], []
        for start in range(0, len(texts), self.max_batch):
            features = self.model.tokenize(texts[start : start + self.max_batch])
            lengths += features["attention_mask"].sum(dim=1).tolist()
            with torch.inference_mode():
                out = self.model(features)["sentence_embedding"]
            vectors.append(out.float().numpy())
        return np.concatenate(vectors), lengths
