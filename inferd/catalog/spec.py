"""The declaration of one served model, as written in a catalog file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal[
    "text-generation",
    "embeddings",
    "automatic-speech-recognition",
    "text-to-speech",
    "ocr",
    "token-classification",
    "image-classification",
    "text-classification",
    "reranking",
    "text-to-image",
    "fill-mask",
    "zero-shot-image-classification",
    "object-detection",
]
EngineKind = Literal["llm", "embeddings", "task", "null"]


class Price(BaseModel):
    """Price book entry, in dollars. Any component may be zero."""

    model_config = ConfigDict(extra="forbid")

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    per_request: float = 0.0
    per_image: float = 0.0
    per_audio_second: float = 0.0


class Weights(BaseModel):
    """Where a model's files come from: exactly one of package, folder, hf_repo or build."""

    model_config = ConfigDict(extra="forbid")

    package: str | None = Field(default=None, description="Installed Python package holding files.")
    folder: str | None = Field(default=None, description="A local directory or file.")
    hf_repo: str | None = Field(default=None, description="A repo already in the local HF cache.")
    build: str | None = Field(
        default=None, description="A small model inferd builds once into the model cache."
    )
    revision: str | None = None
    path: str = Field(default="", description="File or subfolder inside the source.")

    @model_validator(mode="after")
    def _one_source(self) -> Weights:
        sources = [s for s in (self.package, self.folder, self.hf_repo, self.build) if s]
        if len(sources) != 1:
            raise ValueError("weights needs exactly one of: package, folder, hf_repo, build")
        return self


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    task: Task
    engine: EngineKind
    backend: str = Field(default="", description="Engine backend, e.g. llamacpp or transformers.")
    weights: Weights | None = None
    context_length: int = 2048
    price: Price = Field(default_factory=Price)
    replicas: int = Field(default=1, ge=1, le=64)
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    options: dict[str, Any] = Field(default_factory=dict, description="Engine-specific settings.")
    # Set on a version an account deployed (control/): its id, and whose it is. The runtime
    # runs each version on its own replicas, keyed by `key`.
    deploy_id: str | None = None
    account_id: str | None = None
    version: int | None = None

    @property
    def key(self) -> str:
        """The runtime's name for this model's replicas: one per deployed version."""
        return self.deploy_id or self.name

    @model_validator(mode="after")
    def _weights_required(self) -> ModelSpec:
        if self.engine != "null" and self.weights is None:
            raise ValueError(f"model {self.name!r}: engine {self.engine!r} needs weights")
        return self
