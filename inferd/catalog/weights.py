"""Turns a catalog `weights` declaration into a local path. Never downloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from inferd.catalog.spec import Weights


class WeightsNotFound(FileNotFoundError):
    pass


def resolve_weights(weights: Weights) -> Path:
    if weights.package:
        # find_spec does not import the package: model packages often import heavy or missing
        # dependencies at import time.
        spec = importlib.util.find_spec(weights.package)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsNotFound(f"weights package {weights.package!r} is not installed")
        base = Path(next(iter(spec.submodule_search_locations)))
    elif weights.build:
        from inferd.catalog.tiny import built_folder

        base = built_folder(weights.build)
    elif weights.folder:
        base = Path(weights.folder).expanduser()
    else:
        from huggingface_hub import snapshot_download

        try:
            base = Path(
                snapshot_download(weights.hf_repo, revision=weights.revision, local_files_only=True)
            )
        except Exception as exc:  # the hub client raises several unrelated types
            raise WeightsNotFound(f"{weights.hf_repo!r} is not in the local HF cache") from exc
    path = base / weights.path if weights.path else base
    if not path.exists():
        raise WeightsNotFound(f"weights not found at {path}")
    return path
