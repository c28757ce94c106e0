"""Zero-shot image classification with a CLIP-style folder (image and text towers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_image
from inferd.requests import ClassifyImageZeroShot


class CLIPZeroShotModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        torch.set_num_threads(int(options.get("n_threads", 2)))
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.images = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self.template = str(options.get("hypothesis_template", "a photo of a {}."))

    def run(self, request: ClassifyImageZeroShot) -> TaskResult:
        import torch

        labels = request.candidate_labels
        if not isinstance(labels, list) or not 1 <= len(labels) <= 100:
            raise EngineError("`candidate_labels` must list 1 to 100 labels.")
        image = input_image(request.image)
        prompts = [self.template.format(label) for label in labels]
        text = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        pixels = self.images(images=image, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**text, pixel_values=pixels["pixel_values"])
        probs = out.logits_per_image[0].softmax(-1).tolist()
        results = sorted(
            (
                {"label": label, "score": round(p, 6)}
                for label, p in zip(labels, probs, strict=True)
            ),
            key=lambda r: -r["score"],
        )
        return TaskResult(output={"results": results}, units={"images": 1})
