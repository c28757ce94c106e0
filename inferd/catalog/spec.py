"""The declaration of one served model, as written in a catalog file."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    # A LoRA adapter: the runtime key of the base model whose replicas serve it.
    adapter_of: str | None = None
    # Deprecation (built-in models): from this moment (UTC) requests for the model are served
    # by `replacement`, another model of the catalog with the same task.
    deprecated_at: datetime | None = Field(
        default=None, description="Sunset moment: a TOML date (midnight UTC) or datetime."
    )
    replacement: str | None = Field(default=None, description="The model that serves after it.")
    # Set only by the catalog (never declared), on its copy of a replacement that answers for
    # a deprecated model past its date: that model. A field, not a private attribute: the
    # request path reads it on every request, and pydantic's private attributes are slow.
    stands_in_for: ModelSpec | None = Field(default=None, exclude=True, repr=False)

    @property
    def key(self) -> str:
        """This version's identity: its deploy_id, or a built-in model's name."""
        return self.deploy_id or self.name

    @property
    def runtime_key(self) -> str:
        """Whose replicas serve requests: its own, or its base model's (an adapter)."""
        return self.adapter_of or self.key

    def standing_in_for(self, deprecated: ModelSpec) -> ModelSpec:
        """A copy of this spec that serves requests for `deprecated`."""
        return self.model_copy(update={"stands_in_for": deprecated})

    @field_validator("stands_in_for")
    @classmethod
    def _not_declared(cls, value: ModelSpec | None) -> ModelSpec | None:
        # Validators run on declared input only, never on the catalog's model_copy.
        if value is not None:
            raise ValueError("`stands_in_for` is set by the catalog, not declared")
        return value

    @field_validator("deprecated_at", mode="before")
    @classmethod
    def _utc_moment(cls, value: Any) -> Any:
        # A TOML date means midnight UTC; a datetime without an offset is read as UTC.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("deprecated_at")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _weights_required(self) -> ModelSpec:
        if self.engine != "null" and self.weights is None:
            raise ValueError(f"model {self.name!r}: engine {self.engine!r} needs weights")
        return self

    @model_validator(mode="after")
    def _deprecation_complete(self) -> ModelSpec:
        # The catalog checks the replacement itself (it exists, same task, no chain).
        if (self.deprecated_at is None) != (self.replacement is None):
            raise ValueError(f"model {self.name!r}: `deprecated_at` and `replacement` go together")
        return self
