"""The OpenAPI 3.1 document, built from the routes' `Endpoint` declarations.

Schemas come from pydantic's JSON-schema generation over the very types that parse requests
(validation mode) and describe rendered responses (serialization mode), so the document cannot
drift from the wire. Built once per app and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema
from starlette.routing import BaseRoute

import inferd
from inferd.api.endpoint import ERRORS, FORM, JSON, Endpoint, Events, Link
from inferd.api.protocol import ErrorResponse

REF = "#/components/schemas/{model}"
# What pydantic's lax mode reads as a number from a string (a subset: no whitespace, no `_`).
INT_STRING = r"^[+-]?[0-9]+$"
FLOAT_STRING = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"

MEDIA_JSON = {
    "type": "string",
    "pattern": "^(data:|https?://)",
    "description": "A data URL or an http(s) URL (fetched behind the SSRF guard).",
}
MEDIA_FORM = {
    "type": "string",
    "format": "binary",
    "description": "A file part (a text part may hold a data URL or an http(s) URL).",
}

DESCRIPTION = """\
The OpenAI-compatible API (`/v1/openai/...`), the native per-model API
(`/v1/inference/{model}`), model cards, accounts and keys, and the probes.

Authenticate with `Authorization: Bearer <API key or scoped JWT>`. Every error body is
`{"error": {"message", "type", "param", "code"}, "detail"}`.

The wire is lenient, as clients expect: fields a route does not use are ignored, and numbers
may be sent as numeric strings (multipart fields always are). `model` examples list the
models this server serves.
"""


class LenientJsonSchema(GenerateJsonSchema):
    """pydantic's JSON schema, widened where validation is lax: a request number may also
    be a numeric string (the AI SDK sends image sizes as strings)."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return self._or_string(super().int_schema(schema), INT_STRING)

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return self._or_string(super().float_schema(schema), FLOAT_STRING)

    def _or_string(self, number: JsonSchemaValue, pattern: str) -> JsonSchemaValue:
        if self.mode != "validation":
            return number
        return {"anyOf": [number, {"type": "string", "pattern": pattern}]}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _endpoints(routes: Iterable[BaseRoute]) -> Iterator[Endpoint]:
    for route in routes:
        if isinstance(route, Endpoint) and route.include_in_schema:
            yield route


def build_openapi(
    routes: Iterable[BaseRoute],
    *,
    models: Sequence[str] = (),
    title: str = "inferd",
    version: str = inferd.__version__,
) -> dict[str, Any]:
    """The document for `routes` (only `Endpoint`s; other routes are not API endpoints).
    `models` become the examples of every `model` path parameter and request field."""
    endpoints = list(_endpoints(routes))
    by_path = {(ep.method, ep.path_format): ep for ep in endpoints}
    # One pass over every type, so that shared types become one component each.
    inputs: list[tuple[tuple[Any, ...], JsonSchemaMode, TypeAdapter[Any]]] = []
    for i, ep in enumerate(endpoints):
        for media, tp in ep.body.items():
            inputs.append(((i, "body", media), "validation", _adapter(tp)))
        if ep.query is not None:
            inputs.append(((i, "query"), "validation", _adapter(ep.query)))
        for status, reply in ep.responses.items():
            for media, tp in reply.content.items():
                if isinstance(tp, Events):
                    inputs.append(((i, status, media), "serialization", _adapter(tp.payload)))
                elif tp not in (bytes, str):
                    inputs.append(((i, status, media), "serialization", _adapter(tp)))
    inputs.append((("error",), "serialization", _adapter(ErrorResponse)))
    schemas, defs_doc = TypeAdapter.json_schemas(
        inputs, ref_template=REF, schema_generator=LenientJsonSchema
    )
    components: dict[str, Any] = defs_doc.get("$defs", {})

    def schema_of(key: tuple[Any, ...], mode: JsonSchemaMode) -> dict[str, Any]:
        return schemas[(key, mode)]

    error = schema_of(("error",), "serialization")
    media = _split_media(components)
    paths: dict[str, dict[str, Any]] = {}
    request_refs: set[str] = set()
    for i, ep in enumerate(endpoints):
        operation: dict[str, Any] = {"operationId": ep.operation_id, "summary": ep.summary}
        if ep.description:
            operation["description"] = ep.description
        parameters = [_path_parameter(ep, name, models) for name in ep.param_convertors]
        if ep.query is not None:
            query = schema_of((i, "query"), "validation")
            parameters += _query_parameters(_resolve(query, components))
        if parameters:
            operation["parameters"] = parameters
        if ep.body:
            content = {}
            for media_type in ep.body:
                body = schema_of((i, "body", media_type), "validation")
                if media_type == FORM:
                    body = _rename_refs(body, {name: name + "Form" for name in media})
                request_refs.update(_refs(body))
                content[media_type] = {"schema": body}
            operation["requestBody"] = {"required": True, "content": content}
        responses: dict[str, Any] = {}
        for status, reply in sorted(ep.responses.items()):
            content = {
                media: {"schema": _reply_schema(tp, schema_of((i, status, media), "serialization"))}
                if tp not in (bytes, str)
                else {"schema": _plain(tp)}
                for media, tp in reply.content.items()
            }
            responses[str(status)] = {"description": reply.description}
            if content:
                responses[str(status)]["content"] = content
            if ep.links.get(status):
                responses[str(status)]["links"] = _links(ep, ep.links[status], by_path)
        for status in ep.errors:
            responses[str(status)] = {
                "description": ERRORS[status],
                "content": {JSON: {"schema": error}},
            }
        operation["responses"] = responses
        if not ep.auth:
            operation["security"] = []
        paths.setdefault(ep.path_format, {})[ep.method.lower()] = operation

    _add_model_examples(components, request_refs, models)
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`ik_...`) or a scoped JWT (`jwt:...`).",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }
    _prune(document)
    return document


def _links(
    ep: Endpoint, links: Sequence[Link], by_path: dict[tuple[str, str], Endpoint]
) -> dict[str, Any]:
    """The response's `links`, each naming its target by operation id; a link to an operation
    or a parameter that does not exist is an error here, not a dead link in the document."""
    out: dict[str, Any] = {}
    for link in links:
        target = by_path.get((link.method.upper(), link.path))
        if target is None:
            raise ValueError(f"{ep.path_format}: link to no operation {link.method} {link.path}")
        known = {f"path.{name}" for name in target.param_convertors}
        if target.query is not None:
            known |= {f"query.{f.alias or name}" for name, f in target.query.model_fields.items()}
        for name in link.parameters:
            qualified = name if "." in name else f"path.{name}"
            if qualified not in known and f"query.{name}" not in known:
                raise ValueError(f"{ep.path_format}: {target.operation_id} has no parameter {name}")
        if link.body is not None and JSON not in target.body:
            raise ValueError(f"{ep.path_format}: {target.operation_id} takes no JSON body")
        name = link.name or target.operation_id
        if name in out:
            raise ValueError(f"{ep.path_format}: two links named {name}")
        item: dict[str, Any] = {"operationId": target.operation_id}
        if link.parameters:
            item["parameters"] = dict(link.parameters)
        if link.body is not None:
            item["requestBody"] = dict(link.body)
        if link.description:
            item["description"] = link.description
        out[name] = item
    return out


def _is_media(prop: Any) -> bool:
    """`str | bytes` (a media field: an upload, a data URL or an http(s) URL)."""
    options = prop.get("anyOf") if isinstance(prop, dict) else None
    return isinstance(options, list) and sorted(options, key=len) == [
        {"type": "string"},
        {"type": "string", "format": "binary"},
    ]


def _split_media(components: dict[str, Any]) -> set[str]:
    """Models with media fields get a second component, `{name}Form`, for multipart bodies:
    there a media field is a file part; in JSON it is a data URL or an http(s) URL (what
    `str | bytes` means on each wire). Returns the names of those models."""
    split = set()
    for name, schema in list(components.items()):
        props = schema.get("properties", {})
        fields = [field for field, prop in props.items() if _is_media(prop)]
        if not fields:
            continue
        form = {**schema, "properties": dict(props)}
        for field in fields:
            title = {"title": props[field]["title"]} if "title" in props[field] else {}
            props[field] = {**title, **MEDIA_JSON}
            form["properties"][field] = {**title, **MEDIA_FORM}
        if "title" in form:
            form["title"] += " (multipart)"
        components[name + "Form"] = form
        split.add(name)
    return split


def _rename_refs(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and _ref_name(ref) in names:
            return {**value, "$ref": REF.format(model=names[_ref_name(ref)])}
        return {k: _rename_refs(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, names) for v in value]
    return value


def _path_parameter(ep: Endpoint, name: str, models: Sequence[str]) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    if name in ep.params:
        parameter["description"] = ep.params[name]
    if name == "model" and models:
        parameter["examples"] = {m: {"value": m} for m in models}
    return parameter


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return components[_ref_name(ref)] if ref else schema


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _query_parameters(model: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(model.get("required", ()))
    parameters = []
    for name, prop in model.get("properties", {}).items():
        schema = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
        # A query parameter is absent or a string; `null` has no spelling in a URL.
        options = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
        if len(options) == 1:
            schema.update(options[0])
        elif options:
            schema["anyOf"] = options
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": schema,
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _reply_schema(tp: Any, payload: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(tp, Events):
        return payload
    # OpenAPI 3.2's reading, which 3.1 tools (schemathesis) share: the schema describes one
    # event; `data` holds JSON of the payload type.
    data: dict[str, Any] = {
        "type": "string",
        "contentMediaType": JSON,
        "contentSchema": payload,
    }
    if tp.done is not None:
        data = {"anyOf": [{"const": tp.done}, data]}
    return {
        "type": "object",
        "properties": {"event": {"type": "string"}, "data": data},
        "required": ["data"],
    }


def _plain(tp: type) -> dict[str, Any]:
    if tp is bytes:
        return {"type": "string", "format": "binary"}
    return {"type": "string"}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str):
            yield _ref_name(ref)
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _add_model_examples(components: dict[str, Any], roots: set[str], models: Sequence[str]) -> None:
    """Served models as examples of `model` in request bodies, for Swagger's "Try it out"
    and for schemathesis to reach real models."""
    if not models:
        return
    for name in _closure(components, roots):
        prop = components[name].get("properties", {}).get("model")
        if prop is not None and prop.get("type") == "string":
            prop["examples"] = list(models)


def _closure(components: dict[str, Any], roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in components:
            continue
        seen.add(name)
        todo.extend(_refs(components[name]))
    return seen


def _prune(document: dict[str, Any]) -> None:
    """Drop components nothing refers to (query models are inlined as parameters)."""
    components = document["components"]["schemas"]
    used = _closure(components, _refs(document["paths"]))
    for name in list(components):
        if name not in used:
            del components[name]
