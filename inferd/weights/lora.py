"""PEFT LoRA adapters → GGUF LoRA files that llama.cpp applies on top of a running base model.

A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`) holds, per adapted
linear layer, `lora_A` (rank x in) and `lora_B` (out x rank) under Hugging Face module names.
llama.cpp wants the same pairs under its own tensor names (`blk.N.attn_q.weight.lora_a`), in a
GGUF whose `general.type` is `adapter`, with `adapter.type = lora` and `adapter.lora.alpha`
(it scales each pair by alpha / rank, as PEFT does). This is what llama.cpp's
`convert_lora_to_gguf.py` writes; here it is done without the base model's HF config, from the
base GGUF itself, which the server already has.

Only the Llama architecture is mapped (SmolLM2, Llama 2/3, Mistral-style): its converter
permutes the rows of q_proj and k_proj (rotary halves interleaved per head), so lora_B of those
two is permuted the same way; lora_A (the input side) is untouched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from inferd.weights.cache import cache_root

CONVERTER_VERSION = 1  # part of the cache key: a changed converter never reuses old files
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SUPPORTED_ARCHS = ("llama",)
# Hugging Face Llama module → llama.cpp tensor (as gguf's tensor name map gives it).
MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$"
)
_LAYER = re.compile(r"^model\.layers\.(?P<layer>\d+)\.(?P<module>.+)$")


# adapter_config.json options whose weights or arithmetic plain LoRA pairs cannot express.
_UNSUPPORTED = {
    "use_dora": "DoRA adapters",
    "alpha_pattern": "Adapters with a per-module `alpha_pattern`",
    "modules_to_save": "Adapters with `modules_to_save` (fully retrained layers)",
    "lora_bias": "Adapters with a bias on lora_B (`lora_bias`)",
    "trainable_token_indices": "Adapters that train token embeddings",
    "target_parameters": "Adapters on raw parameters (`target_parameters`)",
    "layer_replication": "Adapters with `layer_replication`",
    "alora_invocation_tokens": "Activated LoRA (aLoRA) adapters",
    "use_qalora": "QA-LoRA adapters",
    "fan_in_fan_out": "Adapters with `fan_in_fan_out` weights",
}


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / CONFIG
    if not path.is_file():
        raise ValueError(f"The adapter folder has no {CONFIG}; is it a PEFT adapter?")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"The adapter's {CONFIG} is not valid JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"The adapter's {CONFIG} is not a JSON object.")
    return config


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model the adapter was trained on (`base_model_name_or_path`)."""
    base = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ValueError(f"The adapter's {CONFIG} does not name its base model.")
    return base


def adapter_hash(adapter_dir: Path) -> str:
    """A digest of the adapter folder's content (config and weights), the cache key."""
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        path = adapter_dir / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def converted_adapter(adapter_dir: Path, base_gguf: Path) -> Path:
    """The adapter as a GGUF LoRA for this base, converted once into the model cache."""
    stat = base_gguf.stat()
    key = hashlib.sha256(
        f"{adapter_hash(adapter_dir)}:{base_gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
        f"v{CONVERTER_VERSION}".encode()
    ).hexdigest()[:24]
    out = cache_root() / "adapters" / f"{key}.gguf"
    if out.is_file():
        return out
    return convert_peft_to_gguf(adapter_dir, base_gguf, out)


def _check_config(config: dict[str, Any]) -> tuple[float, bool]:
    """(lora_alpha, use_rslora), or ValueError for what llama.cpp cannot apply."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ValueError(f"Only LoRA adapters are supported; this one is {peft_type}.")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError("The adapter's config has no valid rank `r`.")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError("The adapter's config has no valid `lora_alpha`.")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise ValueError(f"{what} are not supported (llama.cpp applies plain LoRA only).")
    if config.get("bias", "none") != "none":
        raise ValueError("Adapters that train biases (`bias` other than none) are not supported.")
    return float(alpha), bool(config.get("use_rslora"))


class _Base:
    """What the converter needs from the base GGUF: architecture, heads, tensor shapes."""

    def __init__(self, base_gguf: Path) -> None:
        import gguf

        reader = gguf.GGUFReader(base_gguf)

        def field(key: str) -> Any:
            value = reader.fields.get(key)
            return None if value is None else value.contents()

        self.arch = str(field("general.architecture"))
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(
                f"Adapters are not supported for base models of architecture `{self.arch}` "
                f"(supported: {', '.join(SUPPORTED_ARCHS)})."
            )
        self.n_head = int(field(f"{self.arch}.attention.head_count"))
        self.n_head_kv = int(field(f"{self.arch}.attention.head_count_kv") or self.n_head)
        # GGUF shapes are (in, out), numpy's (and PEFT's) are (out, in).
        self.shapes = {
            t.name: (int(t.shape[1]), int(t.shape[0])) for t in reader.tensors if len(t.shape) == 2
        }


@functools.lru_cache(maxsize=4)
def _read_base(path: str, size: int, mtime_ns: int) -> _Base:
    """Reading a GGUF parses its whole vocabulary (seconds): once per base file."""
    return _Base(Path(path))


def _base(base_gguf: Path) -> _Base:
    stat = base_gguf.stat()
    return _read_base(str(base_gguf.resolve()), stat.st_size, stat.st_mtime_ns)


def _target(module_path: str, base: _Base) -> str:
    """The llama.cpp tensor a HF module adapts, e.g. model.layers.3.self_attn.q_proj →
    blk.3.attn_q.weight."""
    match = _LAYER.match(module_path)
    if match is None or match["module"] not in MODULES:
        short = module_path.rsplit(".", 1)[-1]
        if short in {"embed_tokens", "lm_head"}:
            raise ValueError(
                f"Adapters that train `{short}` are not supported (only the attention and MLP "
                f"projections: {', '.join(m.split('.')[-1] for m in MODULES)})."
            )
        raise ValueError(
            f"The adapter targets `{short}`, which cannot be applied to this model (supported: "
            f"{', '.join(m.split('.')[-1] for m in MODULES)})."
        )
    name = f"blk.{match['layer']}.{MODULES[match['module']]}.weight"
    if name not in base.shapes:
        raise ValueError(
            f"The adapter adapts layer {match['layer']}, which the base model does not have: "
            "it was trained for another base model."
        )
    return name


def _permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (LlamaModel.permute in convert_hf_to_gguf.py), on lora_B."""
    out, rank = b.shape
    return b.reshape(n_head, 2, out // n_head // 2, rank).swapaxes(1, 2).reshape(out, rank)


def convert_peft_to_gguf(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """Write the PEFT LoRA in `adapter_dir` as a GGUF LoRA for `base_gguf` at `out`
    (atomically). Raises ValueError, with a sentence for the user, for adapters llama.cpp
    cannot apply to this base."""
    import gguf
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config = read_adapter_config(adapter_dir)
    alpha, rslora = _check_config(config)
    weights_path = adapter_dir / WEIGHTS
    if not weights_path.is_file():
        raise ValueError(
            f"The adapter folder has no {WEIGHTS} (adapters saved as .bin are not supported)."
        )
    base = _base(base_gguf)
    try:
        # torch-free: PEFT saves float32, float16 or bfloat16; numpy has no bfloat16, so
        # those files are read through torch below.
        tensors: dict[str, np.ndarray] = load_file(str(weights_path))
    except (SafetensorError, TypeError, ValueError):
        tensors = _load_with_torch(weights_path)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if ".lora_embedding_" in key:
            raise ValueError("Adapters that train the token embeddings are not supported.")
        match = _LORA_KEY.match(key)
        if match is None:
            raise ValueError(
                f"The adapter holds `{key}`, which is not a LoRA weight (lora_A / lora_B)."
            )
        target = _target(match["module"], base)
        pairs.setdefault(target, {})[match["part"]] = value.astype(np.float32)
    if not pairs:
        raise ValueError("The adapter holds no LoRA weights.")
    arrays: list[tuple[str, np.ndarray]] = []
    for target, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ValueError(f"The adapter's weights for `{target}` are incomplete.")
        a, b = pair["A"], pair["B"]
        n_out, n_in = base.shapes[target]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != n_in or b.shape[0] != n_out:
            raise ValueError(
                f"The adapter's weights for `{target}` do not fit the base model "
                f"({b.shape[0] if b.ndim == 2 else '?'}x{a.shape[1] if a.ndim == 2 else '?'} "
                f"instead of {n_out}x{n_in}): it was trained for another base model."
            )
        if a.shape[0] != b.shape[1]:
            raise ValueError(f"The adapter's weights for `{target}` have mismatched ranks.")
        if rslora:
            # PEFT scales rsLoRA by alpha/sqrt(r), llama.cpp by alpha/r: fold the rest into B.
            b = b * math.sqrt(a.shape[0])
        if target.endswith(".attn_q.weight"):
            b = _permute_rows(b, base.n_head)
        elif target.endswith(".attn_k.weight"):
            b = _permute_rows(b, base.n_head_kv)
        arrays.append((f"{target}.lora_a", np.ascontiguousarray(a)))
        arrays.append((f"{target}.lora_b", np.ascontiguousarray(b)))

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, base.arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in arrays:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    try:
        partial.replace(out)  # atomic: readers see the old file, the new one, or none
    finally:
        partial.unlink(missing_ok=True)
    return out


def _load_with_torch(path: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    try:
        loaded = load_file(str(path))
    except Exception as exc:
        raise ValueError(f"The adapter's {WEIGHTS} could not be read ({exc}).") from None
    return {key: value.float().numpy() for key, value in loaded.items()}
