"""One TaskModel per task; `load_task_model` picks it from the catalog entry."""

from __future__ import annotations

import importlib
from pathlib import Path

from inferd.catalog.spec import ModelSpec
from inferd.engines.task import TaskModel

# task → (module in this package, TaskModel class); imported only by the worker that needs it.
MODELS = {
    "automatic-speech-recognition": ("speech_recognition", "WhisperModel"),
    "text-to-speech": ("text_to_speech", "PiperModel"),
    "ocr": ("ocr", "RapidOCRModel"),
    "token-classification": ("token_classification", "SpacyNERModel"),
    "image-classification": ("image_classification", "EfficientNetLiteModel"),
    "text-classification": ("text_classification", "VaderSentimentModel"),
    "text-to-image": ("text_to_image", "DiffusersModel"),
    "fill-mask": ("fill_mask", "MaskedLMModel"),
    "zero-shot-image-classification": ("zero_shot_image", "CLIPZeroShotModel"),
    "object-detection": ("object_detection", "DetectorModel"),
    "reranking": ("reranking", "BiEncoderReranker"),
}


def load_task_model(spec: ModelSpec, path: Path) -> TaskModel:
    if spec.task not in MODELS:
        raise ValueError(f"model {spec.name!r}: no task engine for {spec.task!r}")
    module, name = MODELS[spec.task]
    model_type = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return model_type(path, spec.options)
