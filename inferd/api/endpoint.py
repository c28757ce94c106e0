"""Routes that carry their API contract.

An `Endpoint` is a Starlette `Route` for one method that also declares what `GET /openapi.json`
says about it: the request body model per media type, the query model, and the response body
type per status and media type. The handler stays a plain `async def handler(request)`; the
declarations are read once, when the OpenAPI document is built, and cost nothing per request.

Types are the ones that parse and render the wire: pydantic request models from the
`protocol.py` files, and TypedDicts (or lists and unions of them) for response bodies.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"
FORM = "multipart/form-data"
SSE = "text/event-stream"
TEXT = "text/plain"


@dataclass(frozen=True)
class Events:
    """A `text/event-stream` body: every event's `data` is the JSON of `payload` (a type),
    except a literal last line `done` (OpenAI's `[DONE]`) where the stream has one."""

    payload: Any
    done: str | None = None


@dataclass(frozen=True)
class Reply:
    """One documented response: what it means and, per media type, the body's type: a
    TypedDict, model, list or union; `Events` for a stream; `bytes` for binary; `str` for text."""

    description: str
    content: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: what a client (or schemathesis' stateful phase) may call next with
    values of this endpoint's success response. The target is the operation of `method` on the
    documented path template (`/v1/routes/{name}`); `parameters` maps the target's parameter
    names (`path.`/`query.` prefixes allowed) and `body` the fields of its JSON body to runtime
    expressions such as `$response.body#/id`. `status` is the response it follows (default: the
    endpoint's lowest 2xx); `name` defaults to the target's operation id."""

    method: str
    path: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    status: int | None = None
    name: str | None = None
    description: str | None = None


def links(parameters: Mapping[str, str], *targets: str) -> tuple[Link, ...]:
    """One `Link` per `"METHOD /path"` in `targets`, each filling `parameters`: the usual
    create → get → update → delete walk of one resource."""
    made = []
    for target in targets:
        method, _, path = target.partition(" ")
        made.append(Link(method, path, parameters))
    return tuple(made)


# Every error body is `inferd.api.protocol.ErrorResponse`; these say when each status happens.
ERRORS: dict[int, str] = {
    400: "Invalid request: a body field or parameter (named in `error.param`) is wrong, or "
    "a value is over a cost cap of this server.",
    401: "Missing, unknown, expired or revoked API key or scoped JWT.",
    402: "A spending limit (the account's or the scoped JWT's) would be passed.",
    403: "Not allowed for this credential (admin only, a scoped JWT, a model outside the "
    "JWT's list).",
    404: "No such model, key or resource.",
    409: "A resource of that name exists already.",
    410: "Gone: the resource's retention window has ended (a webhook delivery's resend).",
    413: "The body, an image or an audio input is too large.",
    415: "A body or an input (image, audio) in a media type the route or the model cannot read.",
    429: "Rate limited: too many requests in flight for this account and model.",
    503: "The model is unavailable or the server is shutting down; retry later.",
}
# What every inference endpoint may answer besides 200 (auth, body and size are added).
INFERENCE_ERRORS = (402, 403, 404, 429, 503)


class Endpoint(Route):
    """One method on one path, with its contract.

    `body` maps a request media type (`JSON`, `FORM`) to the pydantic model (or union of
    models) that parses it; `query` is a model of the query parameters; `responses` maps a
    status to its `Reply`; `errors` lists further statuses answered with the error body. A
    401 is implied by `auth`, a 400 by a body or query, a 413 by a body. `params` describes
    path parameters. `links` (`Link`) say which operations can follow a success with values of
    its body. Summary and description default to the handler's docstring.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        method: str,
        *,
        responses: Mapping[int, Reply],
        body: Mapping[str, Any] | None = None,
        query: type[BaseModel] | None = None,
        errors: Iterable[int] = (),
        auth: bool = True,
        params: Mapping[str, str] | None = None,
        links: Sequence[Link] = (),
        summary: str | None = None,
        description: str | None = None,
        name: str | None = None,
        include_in_schema: bool = True,
    ) -> None:
        super().__init__(
            path, endpoint, methods=[method], name=name, include_in_schema=include_in_schema
        )
        self.method = method.upper()
        self.body = dict(body or {})
        self.query = query
        self.auth = auth
        self.params = dict(params or {})
        implied = {401} if auth else set()
        if self.body or query is not None:
            implied.add(400)
        if self.body:
            implied.add(413)
        self.errors = tuple(sorted(implied | set(errors)))
        unknown = [s for s in self.errors if s not in ERRORS]
        if unknown:
            raise ValueError(f"{path}: no description for error statuses {unknown}")
        overlap = set(responses) & set(self.errors)
        if overlap:
            raise ValueError(f"{path}: {sorted(overlap)} declared both as reply and error")
        self.responses = dict(responses)
        undeclared = set(self.params) - set(self.param_convertors)
        if undeclared:
            raise ValueError(f"{path}: no path parameters {sorted(undeclared)}")
        self.links: dict[int, list[Link]] = {}
        success = sorted(s for s in responses if 200 <= s < 300)
        for link in links:
            status = link.status if link.status is not None else (success or [None])[0]
            if status not in self.responses:
                raise ValueError(f"{path}: a link follows status {status}, not a reply")
            self.links.setdefault(status, []).append(link)
        doc = inspect.getdoc(endpoint) or ""
        first, _, rest = doc.partition("\n")
        self.summary = summary or first.strip() or self.name.replace("_", " ").capitalize()
        self.description = description if description is not None else rest.strip() or None

    @property
    def operation_id(self) -> str:
        """FastAPI's: `{name}{path}` with every non-word character as `_`, then `_{method}`
        (so the seed pages' `/docs#/default/deploy_list_deploy_list_get` links resolve)."""
        return re.sub(r"\W", "_", f"{self.name}{self.path_format}") + f"_{self.method.lower()}"
