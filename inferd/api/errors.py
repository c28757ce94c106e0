"""Errors as clients expect them: `{"error": {"message", "type", "param", "code"}}`.

OpenAI's shape is used on every route (native clients read `detail` as well), so one handler
serves both APIs. Messages name the problem, never echo request content.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from inferd.serving.errors import RequestError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(RequestError):
    """A request the HTTP layer refuses (body, wire format, media); rendered like every
    `RequestError`."""


def error_body(exc: RequestError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": _TYPES.get(exc.status, "server_error"),
            "param": exc.param,
            "code": exc.code,
        },
        "detail": exc.message,
    }


def error_response(exc: RequestError) -> Response:
    headers = exc.headers or ({"Retry-After": "1"} if exc.status in (429, 503) else None)
    return Response(
        orjson.dumps(error_body(exc)),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def from_validation(exc: ValidationError) -> APIError:
    """First problem of a pydantic error, without the offending value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return APIError(
        400, f"Invalid request: `{loc}`: {first['msg']}.", param=loc, code="invalid_parameter"
    )
