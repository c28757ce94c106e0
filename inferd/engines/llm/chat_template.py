"""Renders chat messages with the model's own Jinja chat template (as transformers does)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inferd.engines.base import EngineError

# Used only when a model ships no template: ChatML, the most common format.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _raise(message: str) -> None:
    raise EngineError(f"chat template: {message}")


@lru_cache(maxsize=8)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def render_chat(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    try:
        return _compile(template or FALLBACK_TEMPLATE).render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except EngineError:
        raise
    except TemplateError as exc:
        raise EngineError(f"the messages do not fit the model's chat template: {exc}") from exc
