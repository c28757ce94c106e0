"""multipart/form-data parsed in memory.

Starlette spools uploads over 1 MB to temporary files; user audio and images must never
touch disk, so the (size-capped) body is parsed here with python-multipart's streaming parser.
"""

from __future__ import annotations

from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from inferd.api.errors import APIError

MAX_PARTS = 64


def parse_form(content_type: str, body: bytes) -> dict[str, Any]:
    """Fields as str, files as bytes; a repeated name (`a[]`) collects a list."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise APIError(400, "multipart/form-data needs a boundary.", code="invalid_multipart")
    parts: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise APIError(400, f"At most {MAX_PARTS} form parts.", code="invalid_multipart")
        state.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        disposition, options = parse_options_header(
            state["headers"].get(b"content-disposition", b"")
        )
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise APIError(400, "A form part has no field name.", code="invalid_multipart")
        parts.append(
            {
                "name": name.decode("utf-8", "replace"),
                "is_file": b"filename" in options,
                "data": bytes(state["data"]),
            }
        )

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise APIError(400, "The multipart body is malformed.", code="invalid_multipart") from None
    form: dict[str, Any] = {}
    for part in parts:
        value: Any = part["data"]
        if not part["is_file"]:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise APIError(
                    400, f"Form field `{part['name']}` is not UTF-8 text.", param=part["name"]
                ) from None
        name = part["name"]
        if name.endswith("[]"):
            form.setdefault(name[:-2], []).append(value)
        elif name in form:
            previous = form[name]
            form[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            form[name] = value
    return form
