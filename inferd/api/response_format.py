"""`response_format` (OpenAI and native) as a protocol-neutral decoding constraint."""

from __future__ import annotations

from typing import Any

from inferd.api.errors import APIError


def constraint_for(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's response_format (and DeepInfra's {"type": "json"}) as an engine constraint."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind in ("json_object", "json"):
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise APIError(
                400, "response_format.json_schema needs a `schema` object.", param="response_format"
            )
        return {"type": "json_schema", "schema": spec.get("schema") or {"type": "object"}}
    raise APIError(400, f"Unknown response_format type `{kind}`.", param="response_format")
