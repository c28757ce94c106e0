"""OpenAI request bodies. Permissive like the real API: unknown fields are ignored, numbers
may arrive as numeric strings, `content` may be null. What matters is validated."""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import TypedDict

from inferd.api.errors import APIError
from inferd.api.protocol import ModelCard, Seed
from inferd.requests import SamplingParams


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Request(_Lenient):
    """A top-level OpenAI request body."""

    @model_validator(mode="before")
    @classmethod
    def _no_webhook(cls, data: Any) -> Any:
        # Ignoring it would answer synchronously while the client waits for a callback.
        if isinstance(data, dict) and "webhook" in data:
            raise APIError(
                400,
                "`webhook` is not accepted on the OpenAI-compatible API; use the native API "
                "(POST /v1/inference/{model}) for webhooks.",
                param="webhook",
                code="invalid_parameter",
            )
        return data


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """Text content; parts of other types are refused by the caller before this."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")

    def non_text_parts(self) -> list[str]:
        if isinstance(self.content, list):
            return [str(p.get("type")) for p in self.content if p.get("type") != "text"]
        return []

    def image_urls(self) -> list[str]:
        """URLs of the `image_url` parts, in order (`{"url": ...}` or a bare string)."""
        urls = []
        for part in self.content if isinstance(self.content, list) else ():
            if part.get("type") == "image_url":
                ref = part.get("image_url")
                urls.append(ref.get("url") if isinstance(ref, dict) else ref)
        return urls


class SamplingFields(_Request):
    """Fields shared by chat and legacy completions."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: Seed | None = None
    ignore_eos: bool = False  # extension (as in vLLM): generate exactly max_tokens
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_output_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            max_output_tokens=max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stop=self.stop or [],
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def image_urls(self) -> list[str]:
        return [url for m in self.messages for url in m.image_urls()]

    def features(self) -> dict[str, str]:
        """Features this request needs from the model: tag → what asked for it."""
        wanted = {}
        if self.image_urls():
            wanted["vision"] = "`image_url` message parts"
        if self.tools and self.tool_choice != "none":
            wanted["tools"] = "`tools`"
        if self.response_format and self.response_format.get("type") != "text":
            wanted["json_mode"] = "`response_format`"
        if self.logprobs:
            wanted["logprobs"] = "`logprobs`"
        return wanted

    def refuse_unsupported(self) -> None:
        """Features this server lacks are refused by name, never silently ignored."""
        for message in self.messages:
            for part in message.non_text_parts():
                if part != "image_url":
                    raise APIError(
                        400,
                        f"Message parts of type `{part}` are not supported.",
                        param="messages",
                        code="unsupported_content",
                    )


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def refuse_unsupported(self) -> None:
        if self.suffix:
            raise APIError(
                400,
                "`suffix` (fill-in-the-middle) is not supported.",
                param="suffix",
                code="unsupported_parameter",
            )


class EmbeddingRequest(_Request):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        value = self.input
        if isinstance(value, str):
            value = [value]
        if not value:
            raise APIError(400, "`input` must not be empty.", param="input")
        if not all(isinstance(v, str) for v in value):
            raise APIError(
                400,
                "`input` as token arrays is not supported; send strings.",
                param="input",
                code="unsupported_parameter",
            )
        if any(not v for v in value):
            raise APIError(400, "`input` must not contain empty strings.", param="input")
        return list(value)  # type: ignore[arg-type]


class ImageGenerationRequest(_Request):
    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = Field(default=None, description="`WIDTHxHEIGHT`, e.g. `512x512`, or `auto`.")
    response_format: Literal["url", "b64_json"] = "url"
    negative_prompt: str | None = None  # extensions, as DeepInfra accepts them
    num_inference_steps: int | None = Field(default=None, ge=1, le=150)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class TranscriptionRequest(_Request):
    """multipart/form-data like OpenAI's (`file` is the audio); a JSON body may give `file` as
    a data URL or an http(s) URL."""

    model: str
    file: str | bytes
    language: str | None = Field(default=None, max_length=16)
    prompt: str | None = Field(default=None, max_length=4096)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)


class SpeechRequest(_Request):
    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: str | None = None
    response_format: Literal["mp3", "wav"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


# -- response bodies (TypedDicts: renderers build plain dicts; the OpenAPI schema reads these) --

FinishReason = Literal["stop", "length", "tool_calls"]


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost: float


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(TypedDict):
    content: list[TokenLogprob]


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]


class ChatChoice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(TypedDict, total=False):
    name: str
    arguments: str


class ToolCallDelta(TypedDict):
    index: int
    id: NotRequired[str]
    type: NotRequired[Literal["function"]]
    function: FunctionCallDelta


class ChatDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str
    tool_calls: list[ToolCallDelta]


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None
    logprobs: NotRequired[ChoiceLogprobs]


class ChatCompletionChunk(TypedDict):
    """One `data:` event of a streamed chat completion; with `stream_options.include_usage`
    the last chunk has empty `choices` and the `usage`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: NotRequired[Usage]


class CompletionLogprobs(TypedDict):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(TypedDict):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None


class Completion(TypedDict):
    """A legacy completion; streamed, each `data:` event has this shape with the text so far
    in `choices[].text` deltas, `finish_reason` null until the end and `usage` on the last."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: NotRequired[Usage]


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int
    estimated_cost: float


class Embedding(TypedDict):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: little-endian float32, base64 (`encoding_format`)


class CreateEmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ImageData(TypedDict, total=False):
    url: str
    b64_json: str


class ImagesResponse(TypedDict):
    created: int
    data: list[ImageData]


class Transcription(TypedDict):
    text: str


class TranscriptionWord(TypedDict):
    word: str
    start: float
    end: float


class TranscriptionSegment(TypedDict):
    id: int
    start: float
    end: float
    text: str


class TranscriptionVerbose(TypedDict):
    task: str
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: NotRequired[list[TranscriptionWord]]


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    metadata: ModelCard


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]
