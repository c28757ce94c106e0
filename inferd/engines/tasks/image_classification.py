"""ImageNet classification with EfficientNet-Lite0 (weights loaded with weights_only=True)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import BatchedTaskModel, TaskResult
from inferd.engines.tasks.media import input_image
from inferd.requests import ClassifyImage

LABELS = Path(__file__).with_name("imagenet_labels.txt")
# EfficientNet-Lite was trained on pixels scaled to [-1, 1] ((x - 127.5) / 128).
MEAN, STD = 127.5, 128.0


class EfficientNetLiteModel(BatchedTaskModel):
    max_batch = 16

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        torch.set_num_threads(int(options.get("n_threads", 2)))
        weights = path if path.is_file() else next(path.glob("*.pth"))
        self.model = EfficientNet.from_name(options.get("arch", "efficientnet-lite0"))
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval()
        self.size = int(options.get("image_size", 224))
        self.labels = LABELS.read_text().splitlines()

    def info(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels), "image_size": self.size}

    def _tensor(self, request: ClassifyImage):
        import numpy as np
        from PIL import Image

        image = input_image(request.image).resize((self.size, self.size), Image.Resampling.BICUBIC)
        pixels = (np.asarray(image, dtype=np.float32) - MEAN) / STD
        return pixels.transpose(2, 0, 1)

    def run_batch(self, batch: list[ClassifyImage]) -> list[TaskResult | Exception]:
        import numpy as np
        import torch

        out: list[TaskResult | Exception | None] = []
        rows = []
        for request in batch:
            try:
                top_k = int(request.top_k or 5)
                if not 1 <= top_k <= len(self.labels):
                    raise EngineError(f"`top_k` must be between 1 and {len(self.labels)}.")
                rows.append(self._tensor(request))
                out.append(None)
            except Exception as exc:
                out.append(exc)
        if rows:
            with torch.inference_mode():
                probs = self.model(torch.from_numpy(np.stack(rows))).softmax(-1).numpy()
        row = 0
        for i, request in enumerate(batch):
            if out[i] is not None:
                continue
            top_k = int(request.top_k or 5)
            order = np.argsort(-probs[row])[:top_k]
            results = [
                {"label": self.labels[j], "score": round(float(probs[row][j]), 6)} for j in order
            ]
            out[i] = TaskResult(output={"results": results}, units={"images": 1})
            row += 1
        return out  # type: ignore[return-value]
