"""Neutral request and event types: the one language of the gateway, the serving path and the
engines (the ground floor of DESIGN.md's flow; imports nothing of inferd).

Wire formats (OpenAI, native, batch lines) are parsed into these by `api/`; `serving/` admits
and submits them; they cross the worker socket as msgpack (`worker/protocol.py`), so bytes
(images, audio, embeddings) travel as binary, not base64 text. Every field a route accepts
has a place here, so nothing is lost between the gateway and the engine.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct, field

# -- text generation --------------------------------------------------------------------------


class Constraint(Struct, omit_defaults=True, frozen=True):
    """Constrained decoding (llguidance): a JSON object, a JSON schema or a Lark grammar."""

    type: Literal["json_object", "json_schema", "lark"]
    schema: dict[str, Any] | None = None
    grammar: str | None = None


class SamplingParams(Struct, omit_defaults=True, kw_only=True):
    max_tokens: int | None = None  # None: up to the context end (and the output cap)
    max_output_tokens: int = 16384
    default_max_tokens: int | None = None  # when max_tokens is None: this, clamped to context
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: bool = False  # the client reads token logprobs (needs the `logprobs` feature)
    top_logprobs: int = 0  # alternatives reported per generated token
    prompt_logprobs: bool = False  # score the prompt too (completions `echo` + `logprobs`)
    constraint: Constraint | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


class TextPart(Struct, tag="text"):
    text: str


class ImagePart(Struct, tag="image"):
    """Where an image of `Generate.images` sits in the message (in order)."""


ContentPart = TextPart | ImagePart


class ChatTurn(Struct, omit_defaults=True, kw_only=True):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] = ""
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's shape, as templates expect it
    tool_call_id: str | None = None


class Generate(Struct, tag="generate", omit_defaults=True, kw_only=True):
    """One generation: a raw prompt or chat messages (with tools and images)."""

    params: SamplingParams
    prompt: str | None = None
    messages: list[ChatTurn] | None = None
    tools: list[dict[str, Any]] | None = None  # function specs (JSON schema), as templates take
    tool_prompt: str | None = None  # tool instructions for templates that know no tools
    images: list[bytes] = field(default_factory=list)
    adapter: str | None = None  # a LoRA adapter loaded on the worker, by name; None: the base
    # Bulk work (a batch line): it advances only in steps no interactive request needs.
    background: bool = False


# -- embeddings -------------------------------------------------------------------------------


class Embed(Struct, tag="embed", kw_only=True):
    texts: list[str]
    normalize: bool = False


# -- unary tasks ------------------------------------------------------------------------------


class Transcribe(Struct, tag="automatic-speech-recognition", kw_only=True):
    audio: bytes
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    initial_prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False


class Synthesize(Struct, tag="text-to-speech", kw_only=True):
    text: str
    voice: str | None = None
    format: Literal["wav", "mp3"] = "wav"
    speed: float = 1.0


class ReadText(Struct, tag="ocr", kw_only=True):
    image: bytes


class ClassifyImage(Struct, tag="image-classification", kw_only=True):
    image: bytes
    top_k: int = 5


class TagTokens(Struct, tag="token-classification", kw_only=True):
    input: str


class ClassifyText(Struct, tag="text-classification", kw_only=True):
    input: str


class Rerank(Struct, tag="reranking", kw_only=True):
    queries: list[str]
    documents: list[str]


class GenerateImage(Struct, tag="text-to-image", kw_only=True):
    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float = 7.5
    seed: int | None = None
    num_images: int = 1


class FillMask(Struct, tag="fill-mask", kw_only=True):
    input: str
    top_k: int = 5


class ClassifyImageZeroShot(Struct, tag="zero-shot-image-classification", kw_only=True):
    image: bytes
    candidate_labels: list[str]


class DetectObjects(Struct, tag="object-detection", kw_only=True):
    image: bytes
    threshold: float = 0.5


TaskRequest = (
    Transcribe
    | Synthesize
    | ReadText
    | ClassifyImage
    | TagTokens
    | ClassifyText
    | Rerank
    | GenerateImage
    | FillMask
    | ClassifyImageZeroShot
    | DetectObjects
)
# A task request's tag is the catalog task it runs on.
TASK_TYPES: dict[str, type[TaskRequest]] = {
    t.__struct_config__.tag: t  # type: ignore[misc]
    for t in TaskRequest.__args__  # type: ignore[attr-defined]
}

InferenceRequest = Generate | Embed | TaskRequest


def task_of(request: InferenceRequest) -> str:
    """The catalog task that serves a request."""
    if isinstance(request, Generate):
        return "text-generation"
    if isinstance(request, Embed):
        return "embeddings"
    return request.__struct_config__.tag  # type: ignore[return-value]


# -- adapters (gateway → worker control) ------------------------------------------------------


class LoadAdapter(Struct, tag="load_adapter", kw_only=True):
    """Add a LoRA adapter to a running model, without restarting it; `path` is a GGUF LoRA
    file on the worker's machine. Loading a name again replaces that adapter."""

    name: str
    path: str


class UnloadAdapter(Struct, tag="unload_adapter", kw_only=True):
    name: str


AdapterCommand = LoadAdapter | UnloadAdapter


# -- events (worker → gateway) ----------------------------------------------------------------


class TopToken(Struct, array_like=True):
    id: int
    text: str
    logprob: float


class Token(Struct, array_like=True):
    """A generated (or scored prompt) token; `logprob` is None for the first prompt token."""

    id: int
    text: str
    logprob: float | None
    special: bool
    top: list[TopToken] | None = None


class ModelInfo(Struct, omit_defaults=True, kw_only=True):
    """What a loaded engine reports about its model."""

    context_length: int | None = None
    dimensions: int | None = None
    max_seqs: int | None = None
    n_vocab: int | None = None
    features: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific facts (labels, limits)


class Ready(Struct, tag="ready", kw_only=True):
    info: ModelInfo
    pid: int


class Fatal(Struct, tag="fatal"):
    message: str


class Started(Struct, tag="start"):
    prompt_tokens: int


class Tokens(Struct, tag="tokens"):
    items: list[Token]


class PromptScores(Struct, tag="prompt"):
    items: list[Token]


FinishReason = Literal["eos", "stop_sequence", "length"]


class Finished(Struct, tag="done", kw_only=True):
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    last_token: Token | None = None  # the stop token when a stop sequence ended the text


class Embedded(Struct, tag="embedded", kw_only=True):
    vectors: bytes  # float32, row-major, len(texts) x dims
    dims: int
    tokens: int


class Usage(Struct, omit_defaults=True, kw_only=True):
    """What a task consumed, for billing."""

    input_tokens: int = 0
    output_tokens: int = 0
    images: float = 0.0
    audio_seconds: float = 0.0
    characters: float = 0.0


class TaskDone(Struct, tag="task_done", kw_only=True):
    """A task's output as the native API returns it; binary outputs (images, audio) are in
    `files`, each referenced from `output` by index."""

    output: dict[str, Any]
    files: list[bytes] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


class AdapterLoaded(Struct, tag="adapter_loaded", kw_only=True):
    name: str


class AdapterUnloaded(Struct, tag="adapter_unloaded", kw_only=True):
    name: str


class Failed(Struct, tag="error", kw_only=True):
    """The request failed; the message never quotes request content."""

    status: int
    code: str
    message: str


Event = (
    Started
    | Tokens
    | PromptScores
    | Finished
    | Embedded
    | TaskDone
    | AdapterLoaded
    | AdapterUnloaded
    | Failed
)
TERMINAL = (Finished, Embedded, TaskDone, AdapterLoaded, AdapterUnloaded, Failed)
ControlEvent = Ready | Fatal


def to_builtins(value: Any) -> Any:
    """A struct as plain JSON-able data (for chat templates and renderers)."""
    return msgspec.to_builtins(value)
