"""Small models built on this machine for tasks with no offline weights (DESIGN.md).

Each builder writes an ordinary transformers/diffusers/PEFT folder from a fixed seed; the engines
load it with the same code that loads real weights from a folder or the hub cache. Folders are
built once into the model cache (`make setup` builds them ahead; a missing one is built on
first load) and named by builder version, so a changed builder never reuses a stale folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from inferd.weights.cache import cache_root


def _vlm(target: Path) -> None:
    from inferd.weights.tiny import vlm

    vlm.build(target)


def _diffusion(target: Path) -> None:
    from inferd.weights.tiny import diffusion

    diffusion.build(target)


def _lora_adapter(target: Path) -> None:
    from inferd.weights.tiny import lora_adapter

    lora_adapter.build(target)


def _task_model(kind: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        from inferd.weights.tiny import task_models

        getattr(task_models, f"build_{kind}")(target)

    return build


BUILDERS: dict[str, tuple[int, Callable[[Path], None]]] = {
    "smolvlm-tiny": (1, _vlm),
    "stable-diffusion-tiny": (2, _diffusion),
    "bert-mlm-tiny": (1, _task_model("masked_lm")),
    "clip-tiny": (1, _task_model("clip")),
    "yolos-tiny": (1, _task_model("detector")),
    # A PEFT LoRA for the default chat model (a test adapter; see lora_adapter.py).
    "smollm2-secret-lora": (1, _lora_adapter),
}


def built_folder(name: str) -> Path:
    if name not in BUILDERS:
        raise FileNotFoundError(f"no model builder named {name!r} (known: {sorted(BUILDERS)})")
    version, builder = BUILDERS[name]
    target = cache_root() / "built" / f"{name}-v{version}"
    if target.is_dir():
        return target
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        builder(partial)
        partial.rename(target)  # atomic: a concurrent builder either wins or finds it done
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def build_all() -> list[Path]:
    return [built_folder(name) for name in BUILDERS]
