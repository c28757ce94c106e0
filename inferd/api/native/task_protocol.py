"""Native request bodies of the unary tasks, and which of their fields are media.

Binary fields accept a multipart file, a data URL or an http(s) URL (`Media`). Multipart
fields arrive as strings; pydantic's lax mode turns "0.5" and "true" into numbers and booleans.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from inferd.api.native.protocol import InferenceStatus

MediaKind = Literal["image", "audio"]

Media = str | bytes
MAX_TEXT = 100_000


class _TaskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SpeechRecognitionRequest(_TaskRequest):
    audio: Media
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = Field(default=None, max_length=16)
    initial_prompt: str | None = Field(default=None, max_length=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    word_timestamps: bool = False


class TextToSpeechRequest(_TaskRequest):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    voice: str | None = None
    format: Literal["wav", "mp3"] = "wav"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


class ImageRequest(_TaskRequest):
    image: Media


class ImageClassificationRequest(ImageRequest):
    top_k: int = Field(default=5, ge=1, le=1000)


class TextInputRequest(_TaskRequest):
    input: str = Field(min_length=1, max_length=MAX_TEXT)


class TextToImageRequest(_TaskRequest):
    prompt: str = Field(min_length=1, max_length=10_000)
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    width: int | None = Field(default=None, ge=64, le=2048)
    height: int | None = Field(default=None, ge=64, le=2048)
    num_inference_steps: int | None = Field(default=None, ge=1, le=150)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=30.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    num_images: int = Field(default=1, ge=1, le=4)


class FillMaskRequest(TextInputRequest):
    top_k: int = Field(default=5, ge=1, le=100)


class ZeroShotImageRequest(ImageRequest):
    candidate_labels: list[str] = Field(min_length=1, max_length=100)

    @field_validator("candidate_labels", mode="before")
    @classmethod
    def _one_form_field(cls, value: object) -> object:
        """Multipart sends a list as repeated fields; one field may hold "a, b, c"."""
        if isinstance(value, str):
            return [label.strip() for label in value.split(",") if label.strip()]
        return value


class ObjectDetectionRequest(ImageRequest):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class RerankRequest(_TaskRequest):
    queries: list[str] = Field(min_length=1, max_length=1024)
    documents: list[str] = Field(min_length=1, max_length=1024)


TASKS: dict[str, tuple[type[_TaskRequest], dict[str, MediaKind]]] = {
    "automatic-speech-recognition": (SpeechRecognitionRequest, {"audio": "audio"}),
    "text-to-speech": (TextToSpeechRequest, {}),
    "ocr": (ImageRequest, {"image": "image"}),
    "image-classification": (ImageClassificationRequest, {"image": "image"}),
    "token-classification": (TextInputRequest, {}),
    "text-classification": (TextInputRequest, {}),
    "reranking": (RerankRequest, {}),
    "text-to-image": (TextToImageRequest, {}),
    "fill-mask": (FillMaskRequest, {}),
    "zero-shot-image-classification": (ZeroShotImageRequest, {"image": "image"}),
    "object-detection": (ObjectDetectionRequest, {"image": "image"}),
}


# -- response bodies: `request_id`, `inference_status` and the task's output ------------------


class TaskResponse(TypedDict):
    request_id: str
    inference_status: InferenceStatus


class Word(TypedDict):
    word: str
    start: float
    end: float


class Segment(TypedDict):
    id: int
    start: float
    end: float
    text: str
    words: NotRequired[list[Word]]


class SpeechRecognitionResponse(TaskResponse):
    text: str
    segments: list[Segment]
    language: str
    duration: float


class TextToSpeechResponse(TaskResponse):
    audio: str  # a data URL
    content_type: str
    format: Literal["wav", "mp3"]


class OcrLine(TypedDict):
    text: str
    score: float
    box: list[list[float]]  # corner points [x, y], clockwise from top left


class OcrResponse(TaskResponse):
    text: str  # the lines in reading order
    lines: list[OcrLine]


class Entity(TypedDict):
    entity_group: str
    score: float
    word: str
    start: int
    end: int


class TokenClassificationResponse(TaskResponse):
    results: list[Entity]


class Label(TypedDict):
    label: str
    score: float


class ImageClassificationResponse(TaskResponse):
    results: list[Label]


class TextClassificationResponse(TaskResponse):
    results: list[Label]
    compound: NotRequired[float]


class RerankResponse(TaskResponse):
    scores: list[float]


class TextToImageResponse(TaskResponse):
    images: list[str]  # data URLs (image/png)


class MaskFill(TypedDict):
    sequence: str
    score: float
    token: int
    token_str: str


class FillMaskResponse(TaskResponse):
    results: list[MaskFill]


class ZeroShotImageClassificationResponse(TaskResponse):
    results: list[Label]


class Box(TypedDict):
    xmin: float
    ymin: float
    xmax: float
    ymax: float


class DetectedObject(TypedDict):
    label: str
    score: float
    box: Box


class ObjectDetectionResponse(TaskResponse):
    results: list[DetectedObject]


TASK_RESPONSES: dict[str, type[TaskResponse]] = {
    "automatic-speech-recognition": SpeechRecognitionResponse,
    "text-to-speech": TextToSpeechResponse,
    "ocr": OcrResponse,
    "image-classification": ImageClassificationResponse,
    "token-classification": TokenClassificationResponse,
    "text-classification": TextClassificationResponse,
    "reranking": RerankResponse,
    "text-to-image": TextToImageResponse,
    "fill-mask": FillMaskResponse,
    "zero-shot-image-classification": ZeroShotImageClassificationResponse,
    "object-detection": ObjectDetectionResponse,
}
