"""Text to image with a diffusers pipeline folder (Stable Diffusion and relatives)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_text
from inferd.requests import GenerateImage


class DiffusersModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import torch
        from diffusers import DiffusionPipeline

        torch.set_num_threads(int(options.get("n_threads", 2)))
        self.pipeline = DiffusionPipeline.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        )
        self.pipeline.set_progress_bar_config(disable=True)
        self.max_side = int(options.get("max_side", 1024))
        self.max_steps = int(options.get("max_steps", 50))
        self.default_side = int(options.get("default_side", 512))
        self.default_steps = int(options.get("default_steps", 25))

    def info(self) -> dict[str, Any]:
        return {"max_side": self.max_side, "max_steps": self.max_steps}

    def run(self, request: GenerateImage) -> TaskResult:
        import torch

        prompt = input_text(request.prompt, "prompt")
        width = int(request.width or self.default_side)
        height = int(request.height or self.default_side)
        for name, side in (("width", width), ("height", height)):
            if side % 8 or not 64 <= side <= self.max_side:
                raise EngineError(
                    f"`{name}` must be a multiple of 8 between 64 and {self.max_side}."
                )
        steps = int(request.num_inference_steps or self.default_steps)
        if not 1 <= steps <= self.max_steps:
            raise EngineError(f"`num_inference_steps` must be between 1 and {self.max_steps}.")
        seed = request.seed
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        count = int(request.num_images or 1)
        with torch.inference_mode():
            result = self.pipeline(
                prompt,
                negative_prompt=request.negative_prompt or None,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=float(request.guidance_scale),
                num_images_per_prompt=count,
                generator=generator,
            )
        images = []
        for image in result.images:
            buf = io.BytesIO()
            image.save(buf, "PNG")
            images.append(buf.getvalue())
        return TaskResult(output={}, files=images, units={"images": len(images)})
