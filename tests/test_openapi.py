"""GET /openapi.json: a valid OpenAPI 3.1 document of every API endpoint, generated from the
models that parse and render the wire, with FastAPI-style operation ids and error responses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route

from inferd.api.endpoint import ERRORS, FORM, JSON, Endpoint
from inferd.api.native.task_protocol import TASK_RESPONSES, TASKS
from inferd.api.openai.protocol import ChatCompletionRequest
from tests.conftest import ADMIN_KEY, NULL_MODEL, Server

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def document(null_server: Server) -> dict[str, Any]:
    r = httpx.get(null_server.url + "/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()


def test_every_api_route_is_documented(document: dict[str, Any]) -> None:
    """Every route of the app is a declared endpoint, except the docs themselves."""
    from inferd.api.app import create_app
    from inferd.config import Settings

    app = create_app(Settings(catalog=None))
    documented = {(p, m.upper()) for p, m, _ in operations(document)}
    served = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        if not route.include_in_schema:
            # The docs themselves, and the browser's pages: sign-in and the dashboard.
            browser = route.path.startswith(("/dash", "/sso/")) or route.path in (
                "/login",
                "/login_sso",
                "/logout",
            )
            assert browser or route.path in ("/openapi.json", "/docs", "/docs/static/{name}")
            continue
        assert isinstance(route, Endpoint), f"{route.path} is not a declared Endpoint"
        served.add((route.path_format, route.method))
    assert served == documented
    expected = {
        ("/v1/openai/chat/completions", "POST"),
        ("/v1/openai/completions", "POST"),
        ("/v1/openai/embeddings", "POST"),
        ("/v1/openai/audio/transcriptions", "POST"),
        ("/v1/openai/audio/speech", "POST"),
        ("/v1/openai/images/generations", "POST"),
        ("/v1/openai/models", "GET"),
        ("/v1/openai/models/{model}", "GET"),
        ("/v1/inference/{model}", "POST"),
        ("/models/list", "GET"),
        ("/models/{model}", "GET"),
        ("/v1/accounts", "POST"),
        ("/v1/accounts", "GET"),
        ("/v1/api-tokens", "GET"),
        ("/v1/api-tokens", "POST"),
        ("/v1/api-tokens/{name}", "DELETE"),
        ("/v1/scoped-jwt", "POST"),
        ("/v1/scoped-jwt", "GET"),
        ("/v1/usage", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
    }
    assert expected <= documented


def test_operation_ids_are_fastapis(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(document):
        assert re.fullmatch(r"\w+", op["operationId"])
        assert op["operationId"].endswith(re.sub(r"\W", "_", path) + "_" + method)
        assert "tags" not in op  # untagged: Swagger lists them under `default`
    by_path = {(p, m): op["operationId"] for p, m, op in operations(document)}
    assert by_path[("/v1/inference/{model}", "post")] == "inference_v1_inference__model__post"
    assert by_path[("/v1/api-tokens/{name}", "delete")] == (
        "delete_api_token_v1_api_tokens__name__delete"
    )


def test_seed_page_operation_ids(document: dict[str, Any]) -> None:
    """The seed pages link `/docs#/default/deploy_list_deploy_list_get` and
    `/docs#/default/deploy_delete_deploy__deploy_id__delete`: both resolve in the served
    document, untagged, with the path parameter named `deploy_id`."""
    by_path = {(path, method): op for path, method, op in operations(document)}
    listed = by_path[("/deploy/list", "get")]
    deleted = by_path[("/deploy/{deploy_id}", "delete")]
    assert listed["operationId"] == "deploy_list_deploy_list_get"
    assert deleted["operationId"] == "deploy_delete_deploy__deploy_id__delete"
    assert "tags" not in listed and "tags" not in deleted
    assert deleted["parameters"][0]["name"] == "deploy_id"


def test_path_converters_are_plain_parameters(document: dict[str, Any]) -> None:
    for path, _, op in operations(document):
        assert ":" not in path
        names = re.findall(r"{(\w+)}", path)
        params = [p["name"] for p in op.get("parameters", ()) if p["in"] == "path"]
        assert params == names
    model = document["paths"]["/v1/inference/{model}"]["post"]["parameters"][0]
    assert NULL_MODEL in model["examples"]  # the served models, for "Try it out"


def test_errors_are_documented_with_the_error_body(document: dict[str, Any]) -> None:
    for path, _, op in operations(document):
        secured = op.get("security") != []
        statuses = set(op["responses"])
        if secured:
            assert "401" in statuses, path
        if "requestBody" in op:
            assert {"400", "413"} <= statuses, path
        for status, response in op["responses"].items():
            if response["description"] == ERRORS.get(int(status)):  # not a declared reply
                schema = response["content"][JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    error = document["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) == {"error", "detail"}
    inference = document["paths"]["/v1/openai/chat/completions"]["post"]["responses"]
    assert {"400", "401", "402", "403", "404", "413", "429", "503"} <= set(inference)


def test_request_schemas_come_from_the_parsing_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert set(chat["properties"]) == set(ChatCompletionRequest.model_fields)
    assert set(chat["required"]) == {"model", "messages"}
    native = document["paths"]["/v1/inference/{model}"]["post"]["requestBody"]["content"]
    assert set(native) == {"application/json", "multipart/form-data"}
    options = {ref["$ref"].rsplit("/", 1)[1] for ref in native[JSON]["schema"]["anyOf"]}
    wanted = {"TextGenerationRequest", "EmbeddingsRequest"}
    wanted |= {model.__name__ for model, _ in TASKS.values()}
    assert options == wanted
    # Media fields (`str | bytes`): a file part in multipart bodies, a data URL or an http(s)
    # URL in JSON ones.
    form_options = {ref["$ref"].rsplit("/", 1)[1] for ref in native[FORM]["schema"]["anyOf"]}
    assert "SpeechRecognitionRequestForm" in form_options
    assert "SpeechRecognitionRequest" not in form_options
    assert "TextGenerationRequest" in form_options  # no media fields: one component
    audio = schemas["SpeechRecognitionRequestForm"]["properties"]["audio"]
    assert audio["type"] == "string" and audio["format"] == "binary"
    audio = schemas["SpeechRecognitionRequest"]["properties"]["audio"]
    assert audio["type"] == "string" and audio["pattern"] == "^(data:|https?://)"
    form = document["paths"]["/v1/openai/audio/transcriptions"]["post"]["requestBody"]["content"]
    assert form[FORM]["schema"] == {"$ref": "#/components/schemas/TranscriptionRequestForm"}
    assert schemas["TranscriptionRequestForm"]["properties"]["file"]["format"] == "binary"


def test_request_schemas_are_lenient(document: dict[str, Any]) -> None:
    """Unknown fields are ignored and numbers may be numeric strings: the schemas must not
    say otherwise."""

    def walk(value: Any) -> Iterator[dict[str, Any]]:
        if isinstance(value, dict):
            yield value
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    schemas = document["components"]["schemas"]
    for name in ("ChatCompletionRequest", "TextToImageRequest", "CreateAccount"):
        for node in walk(schemas[name]):
            assert node.get("additionalProperties") is not False, name
    width = schemas["TextToImageRequest"]["properties"]["width"]
    validator = jsonschema.Draft202012Validator(width)
    assert validator.is_valid(512) and validator.is_valid("512") and validator.is_valid(None)
    assert not validator.is_valid("wide")
    temperature = jsonschema.Draft202012Validator(
        schemas["ChatCompletionRequest"]["properties"]["temperature"]
    )
    assert temperature.is_valid(0.5) and temperature.is_valid("0.5")


def test_responses_are_described(document: dict[str, Any]) -> None:
    native = document["paths"]["/v1/inference/{model}"]["post"]["responses"]["200"]["content"]
    options = {ref["$ref"].rsplit("/", 1)[1] for ref in native[JSON]["schema"]["anyOf"]}
    assert {"TextGenerationResponse", "EmbeddingsResponse"} <= options
    assert {t.__name__ for t in TASK_RESPONSES.values()} <= options
    chat = document["paths"]["/v1/openai/chat/completions"]["post"]["responses"]["200"]
    event = chat["content"]["text/event-stream"]["schema"]
    data = event["properties"]["data"]["anyOf"]
    assert data[0] == {"const": "[DONE]"}
    assert data[1]["contentMediaType"] == JSON
    speech = document["paths"]["/v1/openai/audio/speech"]["post"]["responses"]["200"]["content"]
    assert set(speech) == {"audio/mpeg", "audio/wav"}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator for a schema of the document (its `$ref`s resolved in the document)."""
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = document["paths"][path][method]["responses"][str(status)]
    return resolve(document, response["content"][JSON]["schema"])


def test_live_responses_match_the_document(document: dict[str, Any], null_server: Server) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=null_server.url, headers=auth, timeout=30) as http:
        cases = [
            ("/healthz", "get", http.get("/healthz")),
            ("/readyz", "get", http.get("/readyz")),
            ("/models/list", "get", http.get("/models/list")),
            ("/models/{model}", "get", http.get(f"/models/{NULL_MODEL}")),
            ("/models/{model}", "get", http.get("/models/no/such-model")),
            ("/v1/openai/models", "get", http.get("/v1/openai/models")),
            ("/v1/accounts", "get", http.get("/v1/accounts")),
            ("/v1/api-tokens", "get", http.get("/v1/api-tokens")),
            ("/v1/usage", "get", http.get("/v1/usage")),
            ("/v1/usage", "get", http.get("/v1/usage", params={"from": "yesterday"})),
            ("/v1/inference/{model}", "post", http.post(f"/v1/inference/{NULL_MODEL}", json={})),
            (
                "/v1/inference/{model}",
                "post",
                http.post(f"/v1/inference/{NULL_MODEL}", json={"input": "hi"}),
            ),
            (
                "/v1/openai/chat/completions",
                "post",
                http.post(
                    "/v1/openai/chat/completions",
                    json={"model": NULL_MODEL, "messages": [{"role": "user", "content": "hi"}]},
                ),
            ),
            (
                "/v1/openai/completions",
                "post",
                http.post("/v1/openai/completions", json={"model": NULL_MODEL, "prompt": "hi"}),
            ),
            (
                "/v1/openai/chat/completions",
                "post",
                http.post("/v1/openai/chat/completions", json={"model": NULL_MODEL}),
            ),
            ("/v1/openai/models", "get", httpx.get(null_server.url + "/v1/openai/models")),
        ]
        for path, method, r in cases:
            assert r.headers["content-type"].startswith(JSON), (path, r.status_code)
            validator = response_schema(document, path, method, r.status_code)
            validator.validate(r.json())


def test_openapi_json_is_built_once(null_server: Server) -> None:
    first = httpx.get(null_server.url + "/openapi.json").content
    assert httpx.get(null_server.url + "/openapi.json").content == first


def test_docs_page_is_offline(null_server: Server) -> None:
    page = httpx.get(null_server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "deepLinking: true" in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from a CDN
    for asset in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
        r = httpx.get(null_server.url + asset)
        assert r.status_code == 200 and r.content, asset
    assert httpx.get(null_server.url + "/docs/static/swagger-editor.js").status_code == 404
