"""The model cache: converted and built weights live here, keyed so a stale entry is never
reused. `INFERD_MODEL_CACHE` moves it (the server sets it from its settings for its workers)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("INFERD_MODEL_CACHE", Path.home() / ".cache" / "inferd" / "models"))
