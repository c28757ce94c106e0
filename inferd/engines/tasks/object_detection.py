"""Object detection with a transformers detector folder (DETR, YOLOS, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_image
from inferd.requests import DetectObjects


class DetectorModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        torch.set_num_threads(int(options.get("n_threads", 2)))
        self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForObjectDetection.from_pretrained(
            str(path), local_files_only=True
        ).eval()

    def info(self) -> dict[str, Any]:
        return {"labels": list(self.model.config.id2label.values())}

    def run(self, request: DetectObjects) -> TaskResult:
        import torch

        threshold = float(request.threshold)
        if not 0.0 <= threshold <= 1.0:
            raise EngineError("`threshold` must be between 0 and 1.")
        image = input_image(request.image)
        encoded = self.processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**encoded)
        found = self.processor.post_process_object_detection(
            out, threshold=threshold, target_sizes=[(image.height, image.width)]
        )[0]
        labels = self.model.config.id2label
        results = []
        for score, label, box in zip(
            found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist(), strict=True
        ):
            xmin, ymin, xmax, ymax = (round(max(0.0, v), 1) for v in box)
            results.append(
                {
                    "label": labels.get(label, str(label)),
                    "score": round(score, 6),
                    "box": {
                        "xmin": min(xmin, image.width),
                        "ymin": min(ymin, image.height),
                        "xmax": min(xmax, image.width),
                        "ymax": min(ymax, image.height),
                    },
                }
            )
        results.sort(key=lambda r: -r["score"])
        return TaskResult(output={"results": results}, units={"images": 1})
