"""Renders chat messages with the model's own Jinja chat template (as transformers does)."""

from __future__ import annotations

import json
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


def prepare_messages(
    template: str | None,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tool_prompt: str | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and extra template variables for a chat that may involve tools.

    Templates that know `tools` get them (and the history) as they are. Others get the tool
    description as a system message, assistant tool calls as their JSON, and tool results
    as `tool` messages, which ChatML-style templates render like any other role.
    """
    if tools and template and "tools" in template:
        return messages, {"tools": tools}
    rendered = []
    for message in messages:
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = [
                {
                    "name": c.get("function", {}).get("name"),
                    "arguments": _loads(c.get("function", {}).get("arguments")),
                }
                for c in message["tool_calls"]
            ]
            content = json.dumps(calls[0] if len(calls) == 1 else calls)
            rendered.append({"role": "assistant", "content": content})
        else:
            rendered.append({k: v for k, v in message.items() if k in ("role", "content", "name")})
    if tools and tool_prompt:
        if rendered and rendered[0].get("role") == "system":
            first = rendered[0]
            rendered[0] = {**first, "content": f"{first.get('content') or ''}\n\n{tool_prompt}"}
        else:
            rendered.insert(0, {"role": "system", "content": tool_prompt})
    return rendered, {}


def _loads(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
