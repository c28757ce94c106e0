"""Function calling on top of any chat model, following OpenAI's chat-completions semantics.

- The tools reach the model through its chat template when the template knows `tools`;
  otherwise through a system message that describes them and the JSON reply format (the
  worker decides: it has the template; see engines/llm/chat_template.py).
- A forced call (`tool_choice` "required"/"any"/a named function) is generated under a JSON
  schema with constrained decoding, so its arguments always validate.
- With "auto" the model may answer in text or with a call; a reply that is exactly a call
  object naming a known function becomes `tool_calls`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from inferd.api.errors import APIError

TOOL_PROMPT = (
    "You can call these functions. Each is given as a JSON schema:\n{tools}\n"
    "To call a function, reply with only a JSON object of the form "
    '{{"name": <function name>, "arguments": <arguments object>}} and nothing else. '
    "Otherwise reply normally."
)


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolPlan:
    """What the request asks: which functions, and whether a call is forced."""

    functions: tuple[Function, ...]
    mode: str  # "none" | "auto" | "required"
    forced: Function | None  # a call to exactly this function is required

    @property
    def active(self) -> bool:
        return bool(self.functions) and self.mode != "none"

    def constraint(self) -> dict[str, Any] | None:
        """The JSON schema a forced call is decoded under (None when not forced)."""
        if self.mode != "required":
            return None
        if self.forced is not None:
            return {"type": "json_schema", "schema": self.forced.parameters}
        return {
            "type": "json_schema",
            "schema": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                        "required": ["name", "arguments"],
                        "additionalProperties": False,
                    }
                    for f in self.functions
                ]
            },
        }

    def system_prompt(self) -> str:
        return TOOL_PROMPT.format(tools="\n".join(json.dumps(f.spec()) for f in self.functions))

    def parse(self, text: str) -> tuple[str, str] | None:
        """(name, arguments JSON) when the output is a call; None when it is plain text."""
        if self.forced is not None and self.mode == "required":
            return self.forced.name, _compact(text)
        candidate = text.strip()
        if candidate.startswith("```"):
            candidate = candidate.strip("`").removeprefix("json").strip()
        try:
            obj = json.loads(candidate)
        except ValueError:
            return None
        names = {f.name for f in self.functions}
        if (
            isinstance(obj, dict)
            and obj.get("name") in names
            and isinstance(obj.get("arguments", {}), dict)
        ):
            return obj["name"], json.dumps(obj.get("arguments", {}), separators=(",", ":"))
        return None


def _compact(text: str) -> str:
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text  # cut short by max_tokens: returned as generated


def plan_tools(tools: list[dict[str, Any]] | None, tool_choice: Any) -> ToolPlan:
    functions = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise APIError(
                400, f"tools[{i}]: only tools of type `function` are supported.", param="tools"
            )
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, f"tools[{i}].function.name is required.", param="tools")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise APIError(
                400, f"tools[{i}].function.parameters must be a JSON schema object.", param="tools"
            )
        functions.append(Function(name, str(fn.get("description") or ""), params))
    choice = tool_choice if tool_choice is not None else ("auto" if functions else "none")
    if isinstance(choice, str):
        mode = {"any": "required"}.get(choice, choice)  # LangChain sends "any"
        if mode not in ("none", "auto", "required"):
            raise APIError(400, f"Unknown tool_choice `{choice}`.", param="tool_choice")
        forced = functions[0] if mode == "required" and len(functions) == 1 else None
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        forced = next((f for f in functions if f.name == name), None)
        if forced is None:
            raise APIError(
                400, f"tool_choice names `{name}`, which is not in `tools`.", param="tool_choice"
            )
        mode = "required"
    else:
        raise APIError(400, "tool_choice must be a string or an object.", param="tool_choice")
    if mode == "required" and not functions:
        raise APIError(
            400, "tool_choice requires a call but no `tools` were given.", param="tool_choice"
        )
    return ToolPlan(tuple(functions), mode, forced)


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)
