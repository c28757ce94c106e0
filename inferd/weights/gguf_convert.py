"""Turns a GGUF file into a plain transformers folder, once, so the transformers backend can
serve the same weights as llama.cpp (dequantised to float32).

`save_pretrained` refuses a model loaded from GGUF, hence the copy into a fresh model built
from the same config. Converted folders live in a cache keyed by the file's identity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from inferd.weights.cache import cache_root


def converted_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_root() / f"{gguf.stem}-{key.hexdigest()[:12]}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    fresh = AutoModelForCausalLM.from_config(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    fresh.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic: a concurrent converter either wins or finds it done
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return target
