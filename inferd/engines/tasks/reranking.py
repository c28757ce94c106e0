"""Reranking with a sentence-transformers model: a cross-encoder folder scores (query,
document) pairs jointly; a bi-encoder folder (the default all-MiniLM-L6-v2) scores by cosine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.requests import Rerank


class BiEncoderReranker(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from sentence_transformers import CrossEncoder, SentenceTransformer

        torch.set_num_threads(int(options.get("n_threads", 2)))
        self.max_documents = int(options.get("max_documents", 1024))
        self.cross = bool(options.get("cross_encoder", False))
        if self.cross:
            self.model: Any = CrossEncoder(str(path), device="cpu", local_files_only=True)
        else:
            self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def run(self, request: Rerank) -> TaskResult:
        queries, documents = request.queries, request.documents
        if not queries or not documents:
            raise EngineError("`queries` and `documents` must be non-empty lists of strings.")
        if len(documents) > self.max_documents:
            raise EngineError(f"at most {self.max_documents} documents per request.")
        if len(queries) == 1:
            queries = queries * len(documents)
        elif len(queries) != len(documents):
            raise EngineError(
                "`queries` must hold one query, or one query per document.", code="invalid_length"
            )
        tokenizer = self.model.tokenizer
        tokens = sum(len(tokenizer(t)["input_ids"]) for t in (*set(queries), *documents))
        if self.cross:
            scores = self.model.predict(list(zip(queries, documents, strict=True))).tolist()
        else:
            import numpy as np

            unique = list(dict.fromkeys(queries))
            q = self.model.encode(unique, normalize_embeddings=True)
            d = self.model.encode(documents, normalize_embeddings=True)
            index = {text: i for i, text in enumerate(unique)}
            rows = np.stack([q[index[text]] for text in queries])
            scores = (rows * d).sum(axis=1).tolist()
        return TaskResult(
            output={"scores": [round(float(s), 6) for s in scores]}, input_tokens=tokens
        )
