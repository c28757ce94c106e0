"""Turns a catalog `weights` declaration into a local path. Never downloads."""

from __future__ import annotations

from pathlib import Path

from inferd.catalog.spec import Weights
from inferd.weights.packages import WeightsNotFound, package_folder

__all__ = ["WeightsNotFound", "resolve_weights"]


def resolve_weights(weights: Weights) -> Path:
    if weights.package:
        base = package_folder(weights.package)
    elif weights.build:
        from inferd.weights.tiny import built_folder

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
