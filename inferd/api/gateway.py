"""The request path shared by every endpoint: body → auth → catalog → limits → runtime.

`Gateway.admit` runs the checks in DESIGN.md's order and hands back an `Admission` that owns
the concurrency slot; whoever finishes the request (normal end, error, client disconnect,
worker crash) calls `release()`, which is idempotent.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from inferd import metrics
from inferd.api.errors import APIError, from_validation
from inferd.auth import Authenticator, AuthError, Principal
from inferd.catalog import Catalog, ModelNotFound, ModelSpec
from inferd.config import Settings
from inferd.limits import ConcurrencyLimiter, RateLimited
from inferd.runtime import Call, ModelUnavailable, Runtime

M = TypeVar("M", bound=BaseModel)


_ID_PREFIX = secrets.token_urlsafe(9)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique and opaque (a random per-process prefix and a counter); not a secret."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):09x}"


@dataclass
class Admission:
    principal: Principal
    spec: ModelSpec
    request_id: str
    limiter: ConcurrencyLimiter
    started: float = field(default_factory=time.perf_counter)
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter.release(self.principal.account_id, self.spec.name)

    @property
    def runtime_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        runtime: Runtime,
        authenticator: Authenticator,
        limiter: ConcurrencyLimiter,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.runtime = runtime
        self.auth = authenticator
        self.limiter = limiter
        self.draining = False

    async def read_json(self, request: Request, model_type: type[M]) -> M:
        return self.validate(model_type, await self.read_object(request))

    async def read_object(self, request: Request) -> dict[str, Any]:
        body = await self.read_body(request)
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
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"The request body exceeds {limit} bytes.", code="too_large")
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise APIError(413, f"The request body exceeds {limit} bytes.", code="too_large")
        return bytes(chunks)

    async def admit(self, request: Request, model: str, tasks: tuple[str, ...]) -> Admission:
        if self.draining:
            raise APIError(503, "The server is shutting down.", code="draining")
        try:
            principal = await self.auth.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            raise APIError(exc.status, str(exc), code="invalid_api_key") from None
        try:
            spec = self.catalog.resolve(model)
        except ModelNotFound as exc:
            raise APIError(404, str(exc), code="model_not_found", param="model") from None
        if spec.task not in tasks:
            raise APIError(
                400,
                f"The model `{spec.name}` is a {spec.task} model and does not serve this endpoint.",
                code="wrong_task",
                param="model",
            )
        try:
            self.limiter.acquire(principal.account_id, spec.name, principal.concurrency_limit)
        except RateLimited:
            metrics.RATE_LIMITED.labels(spec.name).inc()
            raise APIError(429, "Rate limited", code="rate_limited") from None
        request.scope.setdefault("state", {}).update(model=spec.name, account=principal.account_id)
        return Admission(principal, spec, new_request_id(), self.limiter)

    async def submit(self, admission: Admission, payload: dict[str, Any]) -> Call:
        try:
            return await self.runtime.submit(admission.spec.name, payload)
        except ModelUnavailable as exc:
            raise APIError(503, str(exc), code="model_unavailable") from None

    def context_length(self, spec: ModelSpec) -> int:
        return int(self.runtime.info(spec.name).get("context_length", spec.context_length))
