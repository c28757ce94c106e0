"""The request path shared by every endpoint: body → auth → catalog → limits → runtime.

`Gateway.admit` runs the checks in DESIGN.md's order and hands back an `Admission` that owns
the concurrency slot; whoever finishes the request (normal end, error, client disconnect,
worker crash) calls `release()`, which is idempotent.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request

from inferd import metrics
from inferd.api.errors import APIError, from_validation
from inferd.api.media.inputs import MediaInputs
from inferd.api.media.multipart import parse_form
from inferd.auth import Authenticator, AuthError, Principal
from inferd.billing.budget import Budget, OverBudget, Reservation, Scope
from inferd.billing.ledger import UsageLedger, UsageRecord
from inferd.billing.pricing import max_cost
from inferd.catalog import Catalog, ModelNotFound, ModelSpec
from inferd.config import Settings
from inferd.limits import ConcurrencyLimiter, InProcessLimiter, RateLimited
from inferd.runtime import Call, ModelUnavailable, Runtime
from inferd.store.blobs import BlobStore

M = TypeVar("M", bound=BaseModel)


_ID_PREFIX = secrets.token_urlsafe(9)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique and opaque (a random per-process prefix and a counter); not a secret."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):09x}"


@dataclass
class Admission:
    """An admitted request: owns its concurrency slot and budget reservation until `finish`."""

    gateway: Gateway
    principal: Principal
    spec: ModelSpec
    request_id: str
    slot: str
    reservation: Reservation | None
    route: str
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: bool = False

    async def finish(
        self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0, cost: float = 0.0
    ) -> None:
        """Every exit path ends here once: release the slot, settle the budget, log usage."""
        if self.finished:
            return
        self.finished = True
        gateway = self.gateway
        if self.reservation is None and isinstance(gateway.limiter, InProcessLimiter):
            # Nothing to await: settle synchronously (no task, nothing a cancel can skip).
            gateway.limiter.release_nowait(self.principal.account_id, self.spec.name)
            gateway.ledger.record(
                gateway.usage_record(self, status, prompt_tokens, completion_tokens, cost)
            )
            return
        # Shielded: a client disconnect cancelling the handler must not skip the release.
        await asyncio.shield(gateway.settle(self, status, prompt_tokens, completion_tokens, cost))

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
        budget: Budget,
        ledger: UsageLedger,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.runtime = runtime
        self.auth = authenticator
        self.limiter = limiter
        self.budget = budget
        self.ledger = ledger
        self.media = MediaInputs(settings)
        self.blobs = BlobStore(settings.home / "blobs", settings.image_ttl_s)
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

    async def read_fields(self, request: Request) -> dict[str, Any]:
        """A JSON object, or a multipart/form-data body (files as bytes, in memory)."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return parse_form(content_type, await self.read_body(request))
        return await self.read_object(request)

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

    async def principal(self, request: Request) -> Principal:
        try:
            return await self.auth.authenticate(request.headers.get("authorization"))
        except AuthError as exc:
            raise APIError(exc.status, str(exc), code="invalid_api_key") from None

    def blob_url(self, request: Request, name: str) -> str:
        base = self.settings.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/v1/blobs/{name}"

    def features(self, spec: ModelSpec) -> list[str]:
        """The catalog's tags plus what the loaded engine reports it can do."""
        reported = self.runtime.info(spec.name).get("features", [])
        return sorted({*spec.tags, *reported})

    def require_features(self, model: str, wanted: dict[str, str]) -> None:
        """400 naming the feature when the model cannot do what the request asks for.
        Unknown models pass through (admit gives the 404)."""
        try:
            spec = self.catalog.resolve(model)
        except ModelNotFound:
            return
        if not wanted or not self.runtime.info(spec.name):
            return  # not loaded yet: the engine refuses what it cannot do itself
        have = self.features(spec)
        for feature, asked_by in wanted.items():
            if feature not in have:
                raise APIError(
                    400,
                    f"The model `{spec.name}` does not support {feature} ({asked_by}).",
                    code="unsupported_feature",
                    param="model",
                )

    async def admit(
        self,
        request: Request,
        model: str,
        tasks: tuple[str, ...],
        *,
        prompt_bound: int = 0,
        max_output: int | None = None,
    ) -> Admission:
        """auth → catalog → limits → budget. `prompt_bound` (an upper bound on input tokens)
        and `max_output` size the budget reservation when a spending limit applies."""
        if self.draining:
            raise APIError(503, "The server is shutting down.", code="draining")
        principal = await self.principal(request)
        try:
            spec = self.catalog.resolve(model)
        except ModelNotFound as exc:
            raise APIError(404, str(exc), code="model_not_found", param="model") from None
        if not principal.allows(spec.name):
            raise APIError(
                403,
                f"This token may not use the model `{spec.name}`.",
                code="model_not_allowed",
                param="model",
            )
        if spec.task not in tasks:
            raise APIError(
                400,
                f"The model `{spec.name}` is a {spec.task} model and does not serve this endpoint.",
                code="wrong_task",
                param="model",
            )
        state = request.scope.setdefault("state", {})
        state.update(model=spec.name, account=principal.account_id)
        reservation = None
        scopes = self._budget_scopes(principal)
        if scopes:
            output = max_output or min(self.settings.max_output_tokens, spec.context_length)
            amount = max_cost(spec.price, prompt_bound, output)
            try:
                reservation = await self.budget.reserve(scopes, amount)
            except OverBudget as exc:
                raise APIError(402, str(exc), code="spending_limit_reached") from None
            except RedisError:
                raise APIError(
                    503, "The budget store is unavailable; retry.", code="limits_unavailable"
                ) from None
        try:
            slot = await self.limiter.acquire(
                principal.account_id, spec.name, principal.concurrency_limit
            )
        except RedisError:
            if reservation is not None:
                await self.budget.settle(reservation, 0.0)
            raise APIError(
                503, "The limits store is unavailable; retry.", code="limits_unavailable"
            ) from None
        except RateLimited:
            if reservation is not None:
                await self.budget.settle(reservation, 0.0)
            metrics.RATE_LIMITED.labels(spec.name).inc()
            raise APIError(429, "Rate limited", code="rate_limited") from None
        return Admission(
            self, principal, spec, new_request_id(), slot, reservation, state.get("route", "other")
        )

    @staticmethod
    def _budget_scopes(principal: Principal) -> tuple[Scope, ...]:
        scopes = []
        if principal.spending_limit is not None:
            scopes.append(
                Scope(f"acct:{principal.account_id}", principal.spending_limit, "this account")
            )
        if principal.jwt is not None and principal.jwt.spending_limit is not None:
            scopes.append(
                Scope(
                    f"jwt:{principal.jwt.jwt_id}", principal.jwt.spending_limit, "this scoped JWT"
                )
            )
        return tuple(scopes)

    async def settle(
        self,
        admission: Admission,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> None:
        principal = admission.principal
        try:
            await self.limiter.release(principal.account_id, admission.spec.name, admission.slot)
        finally:
            if admission.reservation is not None:
                await self.budget.settle(admission.reservation, cost)
            self.ledger.record(
                self.usage_record(admission, status, prompt_tokens, completion_tokens, cost)
            )

    @staticmethod
    def usage_record(
        admission: Admission,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> UsageRecord:
        principal = admission.principal
        return UsageRecord(
            request_id=admission.request_id,
            account_id=principal.account_id,
            key_name=principal.key_name,
            jwt_id=principal.jwt.jwt_id if principal.jwt else None,
            model=admission.spec.name,
            route=admission.route,
            status=status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=cost,
            started_at=admission.started_at,
            duration_ms=admission.runtime_ms,
        )

    async def submit(self, admission: Admission, payload: dict[str, Any]) -> Call:
        try:
            return await self.runtime.submit(admission.spec.name, payload)
        except ModelUnavailable as exc:
            raise APIError(503, str(exc), code="model_unavailable") from None

    def context_length(self, spec: ModelSpec) -> int:
        return int(self.runtime.info(spec.name).get("context_length", spec.context_length))
