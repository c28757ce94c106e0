"""transformers backend: any Hugging Face causal LM folder (or a GGUF, converted once).

The reference backend: exact model code from transformers, float32 on CPU. Each slot keeps
its own DynamicCache; a step runs one forward per scheduled sequence (iteration-level
scheduling shares the scheduler, stop handling and sampling with llama.cpp, but not the
forward pass itself: fusing ragged KV caches is left to the llama.cpp backend).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.base import EngineError
from inferd.engines.llm.backend import ForwardEntry, LLMBackend

# Vision-language models whose image features replace <image> token embeddings one for one
# (get_image_features → pooler_output rows), which is what _embeds does.
TOKEN_MERGING_VLMS = frozenset({"idefics3", "smolvlm"})
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-ins for the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TransformersBackend(LLMBackend):
    def __init__(self, model_path: Path, context_length: int, options: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(int(options.get("n_threads", 1)))
        self._torch = torch
        if model_path.is_file() and model_path.suffix == ".gguf":
            from inferd.weights.gguf_convert import converted_folder

            model_path = converted_folder(model_path)
        self.processor = None
        vision_type = _vision_model_type(model_path)
        if vision_type is not None:
            self._load_vision(model_path, vision_type)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(model_path), dtype=torch.float32, local_files_only=True
            ).eval()
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        limit = getattr(config, "max_position_embeddings", None) or context_length
        self.context_length = min(context_length, int(limit))
        self.max_seqs = int(options.get("max_seqs", 8))
        self.kv_tokens = self.context_length * self.max_seqs
        self.batch_tokens = int(options.get("batch_tokens", 256))
        tok = self.tokenizer
        self.chat_template = getattr(self.processor, "chat_template", None) or tok.chat_template
        self.bos_token = tok.bos_token or ""
        self.eos_token = tok.eos_token or ""
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self.add_bos = tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id]
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self._eog = {i for i in [*eos_ids, tok.eos_token_id] if i is not None}
        self._special = set(tok.all_special_ids)
        self._pieces = self._token_pieces()
        self._caches: dict[int, Any] = {}
        self._lltok = None

    def _load_vision(self, model_path: Path, model_type: str) -> None:
        """An image-text-to-text model (SmolVLM/Idefics3, ...) with its processor."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if model_type not in TOKEN_MERGING_VLMS:
            # Others inject images differently (cross-attention, M-RoPE positions): refuse
            # at load rather than answer wrongly.
            raise ValueError(
                f"vision model type {model_type!r} is not supported "
                f"(supported: {', '.join(sorted(TOKEN_MERGING_VLMS))})"
            )
        self.processor = AutoProcessor.from_pretrained(str(model_path), local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(model_path), dtype=self._torch.float32, local_files_only=True
        ).eval()
        self.image_token_id = int(self.model.config.image_token_id)
        self.vision = True

    def encode_multimodal(self, prompt: str, images: list[bytes]) -> tuple[list[int], Any]:
        import io

        from PIL import Image

        if self.processor is None:
            return super().encode_multimodal(prompt, images)
        try:
            pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        except (OSError, ValueError):  # e.g. a truncated JPEG, which passes a header check
            raise EngineError("An image could not be decoded.", code="invalid_image") from None
        inputs = self.processor(
            text=prompt, images=[pictures] if pictures else None, return_tensors="pt"
        )
        ids = inputs["input_ids"][0].tolist()
        if not pictures:
            return ids, None
        media = _Media(
            pixel_values=inputs["pixel_values"],
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            image_positions=np.flatnonzero(np.asarray(ids) == self.image_token_id),
        )
        return ids, media

    def _embeds(self, entry: ForwardEntry):
        """Token embeddings of the entry's chunk with image features in the image slots."""
        torch = self._torch
        ids = torch.tensor([entry.tokens], dtype=torch.long)
        embeds = self.model.get_input_embeddings()(ids)
        mask = ids[0] == self.image_token_id
        n_images = int(mask.sum())
        if n_images:
            media: _Media = entry.media
            if media.features is None:
                media.features = self.model.model.get_image_features(
                    media.pixel_values, media.pixel_attention_mask
                ).pooler_output[0]
            # A chunked prefill may start mid-prompt: earlier image tokens took earlier rows.
            start = int(np.searchsorted(media.image_positions, entry.pos))
            embeds[0, mask] = media.features[start : start + n_images].to(embeds.dtype)
        return embeds

    def _token_pieces(self) -> list[bytes]:
        tok = self.tokenizer
        tokens = tok.convert_ids_to_tokens(list(range(self.n_vocab)))
        decoder = getattr(tok.backend_tokenizer, "decoder", None) if tok.is_fast else None
        byte_level = decoder is not None and "ByteLevel" in type(decoder).__name__
        alphabet = _bytes_to_unicode() if byte_level else {}
        pieces = []
        for token_id, token in enumerate(tokens):
            if token is None or token_id in self._special:
                pieces.append(b"")
            elif byte_level:
                pieces.append(bytes(alphabet.get(ch, 0) for ch in token))
            elif match := _BYTE_TOKEN.match(token):
                pieces.append(bytes([int(match.group(1), 16)]))
            else:
                pieces.append(token.replace("\u2581", " ").encode("utf-8"))
        return pieces

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def token_bytes(self, token_id: int) -> bytes:
        return self._pieces[token_id]

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def forward(self, entries: list[ForwardEntry], adapter: str | None = None) -> np.ndarray:
        # adapter is always None: this backend takes no adapters (`adapters` is False).
        from transformers import DynamicCache

        torch = self._torch
        rows = []
        for entry in entries:
            cache = self._caches.get(entry.slot)
            if cache is None:
                cache = self._caches[entry.slot] = DynamicCache()
            positions = torch.arange(entry.pos, entry.pos + len(entry.tokens))[None, :]
            with torch.inference_mode():
                if entry.media is not None:
                    inputs = {"inputs_embeds": self._embeds(entry)}
                else:
                    inputs = {"input_ids": torch.tensor([entry.tokens], dtype=torch.long)}
                out = self.model(
                    **inputs,
                    past_key_values=cache,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=0 if entry.all_logits else 1,
                )
            if entry.all_logits:
                rows.extend(out.logits[0].float().numpy())
            elif entry.want_logits:
                rows.append(out.logits[0, -1].float().numpy())
        if not rows:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return np.stack(rows)

    def lltokenizer(self):
        if self._lltok is None:
            import llguidance.hf

            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer)
        return self._lltok

    def release(self, slot: int) -> None:
        self._caches.pop(slot, None)


def _vision_model_type(path: Path) -> str | None:
    """The model_type of a vision-language folder (its config has a vision_config), else None."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    return str(config.get("model_type")) if "vision_config" in config else None


@dataclass
class _Media:
    pixel_values: Any
    pixel_attention_mask: Any
    image_positions: np.ndarray  # prompt positions of the image tokens, ascending
    features: Any = None  # [image tokens, hidden], computed on first use
