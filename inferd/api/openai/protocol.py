"""OpenAI request bodies. Permissive like the real API: unknown fields are ignored, numbers
may arrive as numeric strings, `content` may be null. What matters is validated."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.api.errors import APIError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


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

    def wire_content(self) -> str | list[dict[str, Any]]:
        """Text, or text and image placeholders in order when the message holds images."""
        if not self.image_urls():
            return self.text()
        parts: list[dict[str, Any]] = []
        for part in self.content or ():
            if part.get("type") == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif part.get("type") == "image_url":
                parts.append({"type": "image"})
        return parts


class SamplingFields(_Lenient):
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
    seed: int | None = None
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

    def sampling_params(self, max_output_tokens: int) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "max_output_tokens": max_output_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": self.stop or [],
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
        }


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def prompt_bound(self, tokens_per_image: int) -> int:
        """Upper bound on prompt tokens (a token is at least one byte), for budgets."""
        tools = len(str(self.tools or "")) if self.tools else 0
        text = sum(len(m.text().encode()) + 16 for m in self.messages) + 64 + 2 * tools
        return text + tokens_per_image * len(self.image_urls())

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

    def wire_messages(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            message: dict[str, Any] = {"role": m.role, "content": m.wire_content()}
            if m.name:
                message["name"] = m.name
            if m.tool_calls:
                message["tool_calls"] = m.tool_calls
            if m.tool_call_id:
                message["tool_call_id"] = m.tool_call_id
            out.append(message)
        return out


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

    def prompt_bound(self) -> int:
        return len(self.prompt_text.encode()) + 16

    def refuse_unsupported(self) -> None:
        if self.suffix:
            raise APIError(
                400,
                "`suffix` (fill-in-the-middle) is not supported.",
                param="suffix",
                code="unsupported_parameter",
            )


class EmbeddingRequest(_Lenient):
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
