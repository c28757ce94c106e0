"""Weights shipped inside installed Python packages (the pinned model packages of DESIGN.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class WeightsNotFound(FileNotFoundError):
    pass


def package_folder(package: str) -> Path:
    # find_spec does not import the package: model packages often import heavy or missing
    # dependencies at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(f"weights package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
