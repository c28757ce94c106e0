"""Builds the engine a catalog entry asks for (inside the worker process)."""

from __future__ import annotations

from inferd.catalog.spec import ModelSpec
from inferd.engines.base import Emit, Engine
from inferd.weights.resolve import resolve_weights


def build_engine(spec: ModelSpec, emit: Emit) -> Engine:
    if spec.engine == "null":
        from inferd.engines.null import NullEngine

        return NullEngine(emit, spec.options)
    assert spec.weights is not None
    path = resolve_weights(spec.weights)
    if spec.engine == "embeddings":
        from inferd.engines.embeddings import EmbeddingsEngine

        return EmbeddingsEngine(emit, path, spec.context_length, spec.options)
    if spec.engine == "task":
        from inferd.engines.task import TaskEngine
        from inferd.engines.tasks import load_task_model

        return TaskEngine(emit, load_task_model(spec, path), spec.options)
    if spec.engine == "llm":
        from inferd.engines.llm.engine import LLMEngine

        if spec.backend == "llamacpp":
            from inferd.engines.llm.llamacpp_backend import LlamaCppBackend

            return LLMEngine(emit, LlamaCppBackend(path, spec.context_length, spec.options))
        if spec.backend == "transformers":
            from inferd.engines.llm.transformers_backend import TransformersBackend

            return LLMEngine(emit, TransformersBackend(path, spec.context_length, spec.options))
        raise ValueError(f"model {spec.name!r}: unknown llm backend {spec.backend!r}")
    raise ValueError(f"model {spec.name!r}: unknown engine {spec.engine!r}")
