"""What the HTTP layer holds per process: the serving core, the authenticator, media fetching,
and the helpers every route uses to read a body and a credential.

Routes authenticate first (before the body is even parsed), parse the wire format into a
neutral request, and hand it to `Serving`; nothing of the request path lives here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from inferd.api.errors import APIError, from_validation
from inferd.api.media.inputs import MediaInputs
from inferd.api.media.multipart import parse_form
from inferd.auth import Authenticator, AuthError, Principal
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control.plane import ControlPlane
from inferd.jobs.batch.service import Batches
from inferd.jobs.files import FileStore
from inferd.jobs.webhooks.outbox import Webhooks
from inferd.runtime import Runtime
from inferd.serving import RequestMeta, Serving

M = TypeVar("M", bound=BaseModel)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        serving: Serving,
        authenticator: Authenticator,
        control: ControlPlane | None = None,
        webhooks: Webhooks | None = None,
        files: FileStore | None = None,
        batches: Batches | None = None,
    ) -> None:
        self.settings = settings
        self.serving = serving
        self.auth = authenticator
        self.control = control
        self.webhooks = webhooks
        self.files = files
        self.batches = batches
        self.media = MediaInputs(settings)

    @property
    def catalog(self) -> Catalog:
        return self.serving.catalog

    @property
    def runtime(self) -> Runtime:
        return self.serving.runtime

    @property
    def ledger(self) -> UsageLedger:
        return self.serving.ledger

    @property
    def draining(self) -> bool:
        return self.serving.draining

    async def principal(self, request: Request) -> Principal:
        # A webhook job replays a request as the caller authenticated at submit (set only by
        # api/replay.py; no HTTP request can put anything in the ASGI scope's state).
        replayed = request.scope.get("state", {}).get("principal")
        if replayed is not None:
            return replayed
        try:
            return await self.auth.authenticate(_header(request, b"authorization"))
        except AuthError as exc:
            code = "store_unavailable" if exc.status == 503 else "invalid_api_key"
            raise APIError(exc.status, str(exc), code=code) from None

    async def key_holder(self, request: Request, refusal: str) -> Principal:
        """The caller of a management route: an API key's business, never a scoped JWT's
        (those are for inference); `refusal` is the 403's message."""
        principal = await self.principal(request)
        if principal.jwt is not None:
            raise APIError(403, refusal, code="forbidden")
        return principal

    @staticmethod
    def meta(request: Request, route: str) -> RequestMeta:
        """The request's log metadata, filled by the serving path, read by the access log."""
        state = request.scope.setdefault("state", {})
        given = state.get("request_id")
        meta = RequestMeta(
            route,
            request_id=given,
            once=given is not None,
            price_factor=state.get("price_factor", 1.0),
            background=state.get("background", False),
        )
        state["meta"] = meta
        return meta

    async def read_json(self, request: Request, model_type: type[M]) -> M:
        return self.validate(model_type, await self.read_object(request))

    async def read_object(self, request: Request) -> dict[str, Any]:
        return self.fields("application/json", await self.read_body(request))

    async def read_fields(self, request: Request) -> dict[str, Any]:
        """A JSON object, or a multipart/form-data body (files as bytes, in memory)."""
        return self.fields(self.content_type(request), await self.read_body(request))

    @staticmethod
    def content_type(request: Request) -> str:
        return _header(request, b"content-type") or ""

    @staticmethod
    def fields(content_type: str, body: bytes) -> dict[str, Any]:
        """`read_fields` of a body already read."""
        if content_type.startswith("multipart/form-data"):
            return parse_form(content_type, body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise APIError(
                400, f"The body is not valid JSON ({exc.msg}).", code="invalid_json"
            ) from None
        if not isinstance(data, dict):
            raise APIError(400, "The body must be a JSON object.", code="invalid_json")
        return data

    @staticmethod
    def validate(model_type: type[M], data: dict[str, Any]) -> M:
        try:
            return model_type.model_validate(data)
        except ValidationError as exc:
            raise from_validation(exc) from None

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_request_bytes
        declared = _header(request, b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"The request body exceeds {limit} bytes.", code="too_large")
        # ASGI messages read directly: most bodies arrive in one message.
        message = await request.receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise APIError(413, f"The request body exceeds {limit} bytes.", code="too_large")
            return body
        chunks = bytearray(body)
        while message.get("more_body", False):
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise APIError(499, "The client closed the connection.", code="client_closed")
            chunks += message.get("body", b"")
            if len(chunks) > limit:
                raise APIError(413, f"The request body exceeds {limit} bytes.", code="too_large")
        return bytes(chunks)


def _header(request: Request, name: bytes) -> str | None:
    """One header straight from the ASGI scope, without building Starlette's Headers."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
