"""One TaskModel per task; `load_task_model` picks it from the catalog entry."""

from __future__ import annotations

from pathlib import Path

from inferd.catalog.spec import ModelSpec
from inferd.engines.task import TaskModel


def load_task_model(spec: ModelSpec, path: Path) -> TaskModel:
    options = spec.options
    match spec.task:
        case "automatic-speech-recognition":
            from inferd.engines.tasks.speech_recognition import WhisperModel

            return WhisperModel(path, options)
        case "text-to-speech":
            from inferd.engines.tasks.text_to_speech import PiperModel

            return PiperModel(path, options)
        case "ocr":
            from inferd.engines.tasks.ocr import RapidOCRModel

            return RapidOCRModel(path, options)
        case "token-classification":
            from inferd.engines.tasks.token_classification import SpacyNERModel

            return SpacyNERModel(path, options)
        case "image-classification":
            from inferd.engines.tasks.image_classification import EfficientNetLiteModel

            return EfficientNetLiteModel(path, options)
        case "text-classification":
            from inferd.engines.tasks.text_classification import VaderSentimentModel

            return VaderSentimentModel(path, options)
        case "text-to-image":
            from inferd.engines.tasks.text_to_image import DiffusersModel

            return DiffusersModel(path, options)
        case "fill-mask":
            from inferd.engines.tasks.fill_mask import MaskedLMModel

            return MaskedLMModel(path, options)
        case "zero-shot-image-classification":
            from inferd.engines.tasks.zero_shot_image import CLIPZeroShotModel

            return CLIPZeroShotModel(path, options)
        case "object-detection":
            from inferd.engines.tasks.object_detection import DetectorModel

            return DetectorModel(path, options)
        case "reranking":
            from inferd.engines.tasks.reranking import BiEncoderReranker

            return BiEncoderReranker(path, options)
    raise ValueError(f"model {spec.name!r}: no task engine for {spec.task!r}")
