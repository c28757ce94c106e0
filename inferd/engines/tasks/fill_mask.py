"""Fill-mask with any transformers masked LM folder (BERT, RoBERTa, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_text
from inferd.requests import FillMask


class MaskedLMModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        torch.set_num_threads(int(options.get("n_threads", 2)))
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True).eval()
        self.max_length = min(self.tokenizer.model_max_length, 512)

    def info(self) -> dict[str, Any]:
        return {"mask_token": self.tokenizer.mask_token}

    def run(self, request: FillMask) -> TaskResult:
        import torch

        text = input_text(request.input)
        mask = self.tokenizer.mask_token
        # Clients write [MASK] whatever the model's own mask token is.
        text = text.replace("[MASK]", mask).replace("<mask>", mask)
        top_k = int(request.top_k or 5)
        encoded = self.tokenizer(text, return_tensors="pt")
        ids = encoded["input_ids"][0]
        if len(ids) > self.max_length:
            raise EngineError(f"`input` is longer than {self.max_length} tokens.")
        positions = (ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
        if len(positions) != 1:
            raise EngineError(f"`input` must contain exactly one {mask} (found {len(positions)}).")
        with torch.inference_mode():
            logits = self.model(**encoded).logits[0, positions[0]]
        probs = logits.softmax(-1)
        top = probs.topk(min(top_k, probs.shape[0]))
        results = []
        for score, token_id in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            filled = ids.clone()
            filled[positions[0]] = token_id
            results.append(
                {
                    "sequence": self.tokenizer.decode(filled, skip_special_tokens=True),
                    "score": round(score, 6),
                    "token": token_id,
                    "token_str": self.tokenizer.decode([token_id]),
                }
            )
        return TaskResult(output={"results": results}, input_tokens=len(ids))
