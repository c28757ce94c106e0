"""Loads the catalog file and resolves the model string a client sends to a spec."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from inferd.catalog.spec import ModelSpec

DEFAULT_CATALOG = "default.toml"


class ModelNotFound(LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or is not served here.")
        self.model = model


class Catalog:
    def __init__(self, specs: list[ModelSpec]) -> None:
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"catalog declares models twice: {sorted(duplicates)}")
        self._specs = {s.name: s for s in specs}

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        data = tomllib.loads(text)
        return cls([ModelSpec.model_validate(m) for m in data.get("models", [])])

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        if path is None:
            text = resources.files("inferd.catalog").joinpath(DEFAULT_CATALOG).read_text()
        else:
            text = Path(path).read_text()
        return cls.from_toml(text)

    def find(self, model: str) -> ModelSpec | None:
        """`name`, or `name:version` (one version per model is served today)."""
        spec = self._specs.get(model)
        if spec is None and ":" in model:
            spec = self._specs.get(model.rsplit(":", 1)[0])
        return spec

    def resolve(self, model: str) -> ModelSpec:
        spec = self.find(model)
        if spec is None:
            raise ModelNotFound(model)
        return spec

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
