"""Loads the catalog file and resolves the model string a client sends to a spec.

Built-in models come from the database, which a catalog file seeds (control/builtins.py).
Versions accounts deployed at run time are published here by the control plane (`publish`, a
whole snapshot swapped at once); they are private to their account: to everyone else they do
not exist.

A built-in model may be deprecated (in the catalog file, or by an operator's route with a
date): past its `deprecated_at`, its name (and `name:version`) resolves to a copy of its
replacement's spec that remembers what it stands in for, so the request is served, billed and
limited as the replacement, and the response says so.

Resolution order of a model string: a built-in model (or, past its date, what replaces it),
`deploy_id:ID`, a deployment's name or `name:version` (LoRA adapters are deployments), then a
route (`route`). A route never shadows a name that exists, so the order only matters for what
a route was made for: names nothing else answers.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from inferd.catalog.routes import Route
from inferd.catalog.spec import ModelSpec

DEFAULT_CATALOG = "default.toml"


class ModelNotFound(LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or is not served here.")
        self.model = model


DEPLOY_ID_PREFIX = "deploy_id:"


@dataclass(frozen=True, slots=True)
class DeployedVersion:
    """A version an account deployed, as the control plane last saw it."""

    spec: ModelSpec  # name: the deployment's full name; deploy_id, account_id, version set
    status: str  # initializing, downloading, deploying, running, stopped, failed
    fail_reason: str | None = None
    cold_start_s: float = 120.0  # how long a request waits for an instance to start


class Catalog:
    def __init__(self, specs: list[ModelSpec], clock: Callable[[], float] = time.time) -> None:
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"catalog declares models twice: {sorted(duplicates)}")
        self._declared = specs
        self._deployed: dict[str, DeployedVersion] = {}
        self._versions: dict[str, list[DeployedVersion]] = {}  # full name → by version
        self._routes: dict[str, Route] = {}
        # Unix seconds now; tests move it. Read only for deprecated models.
        self.clock = clock
        self._specs, self._sunsets = self._built(specs, {})

    def _built(
        self, specs: list[ModelSpec], routes: dict[str, Route]
    ) -> tuple[dict[str, ModelSpec], dict[str, tuple[float, ModelSpec]]]:
        """The built-in models with the deprecations of dated routes applied, and each
        deprecated name → (its sunset in unix seconds, the replacement standing in for it)."""
        by_name = {s.name: s for s in specs}
        for route in routes.values():
            spec = by_name.get(route.name)
            if route.deprecated_at is not None and spec is not None:
                by_name[route.name] = spec.model_copy(
                    update={
                        "deprecated_at": route.deprecated_at,
                        "replacement": route.targets[0].model,
                    }
                )
        self._specs = by_name  # `_replacement` reads it
        sunsets = {
            s.name: (s.deprecated_at.timestamp(), self._replacement(s))
            for s in by_name.values()
            if s.deprecated_at is not None
        }
        return by_name, sunsets

    def replace_builtins(self, specs: list[ModelSpec]) -> None:
        """Serve a new set of built-in models (the database's, changed by a seed), checked as
        a whole first; ValueError leaves the catalog as it was."""
        old = self._specs
        try:
            self._specs, self._sunsets = self._built(specs, self._routes)
        except ValueError:
            self._specs = old
            raise
        self._declared = specs

    def publish_routes(self, routes: Iterable[Route]) -> None:
        """Replace the routes with a new snapshot; a dated route deprecates its built-in model.
        ValueError (a deprecation whose replacement does not fit) leaves the catalog as it was."""
        fresh = {r.name: r for r in routes}
        old = self._specs
        try:
            specs, sunsets = self._built(self._declared, fresh)
        except ValueError:
            self._specs = old
            raise
        self._specs, self._sunsets, self._routes = specs, sunsets, fresh

    def declared(self) -> list[ModelSpec]:
        """The built-in models as declared (without the deprecations routes add)."""
        return list(self._declared)

    def route(self, name: str, account_id: str | None = None) -> Route | None:
        """The route of this name that `account_id` may use (not a deprecation route: those
        answer through the built-in model's name)."""
        route = self._routes.get(name)
        if route is None or route.deprecated_at is not None or not route.visible_to(account_id):
            return None
        return route

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def visible_routes(self, account_id: str | None) -> list[Route]:
        return [r for r in self._routes.values() if self.route(r.name, account_id) is r]

    def _replacement(self, spec: ModelSpec) -> ModelSpec:
        """The replacement of a deprecated model: declared here, same task, not deprecated
        itself (no chains, so no cycles)."""
        replacement = self._specs.get(spec.replacement or "")
        where = f"model {spec.name!r}: replacement {spec.replacement!r}"
        if replacement is None or replacement is spec:
            raise ValueError(f"{where} is not another model of this catalog")
        if replacement.task != spec.task:
            raise ValueError(f"{where} is a {replacement.task} model, not {spec.task}")
        if replacement.deprecated_at is not None:
            raise ValueError(f"{where} is deprecated itself; name the final model")
        return replacement.standing_in_for(spec)

    def deprecated(self) -> list[ModelSpec]:
        """The built-in models with a deprecation date."""
        return [self._specs[name] for name in self._sunsets]

    def _current(self, spec: ModelSpec) -> ModelSpec:
        """A deprecated model itself before its date, its replacement from then on."""
        sunset, stand_in = self._sunsets[spec.name]
        return stand_in if self.clock() >= sunset else spec

    def publish(self, versions: Iterable[DeployedVersion]) -> None:
        """Replace the deployed versions (not deleted ones) with a new snapshot."""
        deployed = {v.spec.key: v for v in versions}
        by_name: dict[str, list[DeployedVersion]] = {}
        for version in sorted(deployed.values(), key=lambda v: v.spec.version or 0):
            by_name.setdefault(version.spec.name, []).append(version)
        self._deployed, self._versions = deployed, by_name

    def deployed(self, deploy_id: str) -> DeployedVersion | None:
        return self._deployed.get(deploy_id)

    def deployed_versions(self) -> list[DeployedVersion]:
        return list(self._deployed.values())

    def visible(self, account_id: str | None) -> list[ModelSpec]:
        """The built-in models and the account's own deployments (newest version each)."""
        own = [
            self._serving_version(versions).spec
            for versions in self._versions.values()
            if versions[0].spec.account_id == account_id
        ]
        return [*self._specs.values(), *own]

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

    def find(self, model: str, account_id: str | None = None) -> ModelSpec | None:
        """`name`, `name:version` or `deploy_id:ID`. A built-in model has one version; a
        deployment's bare name is its newest running version (else its newest). Deployments
        are found only for their own account."""
        spec = self._specs.get(model)
        if spec is not None:
            return spec if spec.deprecated_at is None else self._current(spec)
        if model.startswith(DEPLOY_ID_PREFIX):
            found = self._deployed.get(model[len(DEPLOY_ID_PREFIX) :])
            return found.spec if found and found.spec.account_id == account_id else None
        versions = self._versions.get(model)
        if versions is not None:
            if versions[0].spec.account_id != account_id:
                return None
            return self._serving_version(versions).spec
        name, colon, version = model.rpartition(":")
        if not colon:
            return None
        spec = self._specs.get(name)
        if spec is not None:
            return spec if spec.deprecated_at is None else self._current(spec)
        for candidate in self._versions.get(name, ()):
            if str(candidate.spec.version) == version:
                return candidate.spec if candidate.spec.account_id == account_id else None
        return None

    def resolve(self, model: str, account_id: str | None = None) -> ModelSpec:
        spec = self.find(model, account_id)
        if spec is None:
            raise ModelNotFound(model)
        return spec

    @staticmethod
    def _serving_version(versions: list[DeployedVersion]) -> DeployedVersion:
        running = [v for v in versions if v.status == "running"]
        return (running or versions)[-1]

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
