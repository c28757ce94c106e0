"""An admitted request: it owns its concurrency slot and budget reservation until `finish`.

Whoever ends the request (normal end, error, client disconnect, worker crash) calls
`finish()` once; it is idempotent, and it fills the request's `RequestMeta` for the log.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inferd.auth import Principal
from inferd.billing.budget import Reservation
from inferd.catalog import ModelSpec

if TYPE_CHECKING:
    from inferd.serving.core import Serving

_ID_PREFIX = secrets.token_urlsafe(9)
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique and opaque (a random per-process prefix and a counter); not a secret."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):09x}"


@dataclass(slots=True)
class RequestMeta:
    """Metadata of one request for its log line and metrics: never content."""

    route: str = "other"
    model: str | None = None
    label: str | None = None  # the model's label in /metrics (metrics.model_label)
    account: str | None = None
    request_id: str | None = None
    # The request id was given (a webhook or batch job's): it is billed at most once, since
    # the job may run again after a crash.
    once: bool = False
    # What is charged of the price (a batch line's discount: 0.5 charges half).
    price_factor: float = 1.0
    # Bulk work (a batch line): engines run it only when interactive requests leave room.
    background: bool = False
    status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    finish_reason: str | None = None
    # A deprecated model was asked for: its sunset moment and replacement (the response
    # carries `Deprecation` and `Sunset`), and past that moment the model that served.
    deprecation: tuple[datetime, str] | None = None
    served_by: str | None = None
    # A route was asked for: its name (what the usage row and the response name).
    routed_as: str | None = None


@dataclass(slots=True)
class Admission:
    serving: Serving
    principal: Principal
    spec: ModelSpec
    request_id: str
    slot: str
    reservation: Reservation | None
    meta: RequestMeta
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: bool = False

    def __post_init__(self) -> None:
        # Every admitted request passes here, whether the API resolved the model or a job
        # passed a string: one place to note a deprecated model for the response's headers.
        spec = self.spec
        if spec.deprecated_at is not None:
            self.meta.deprecation = (spec.deprecated_at, spec.replacement or "")
        elif (deprecated := spec.stands_in_for) is not None and deprecated.deprecated_at:
            self.meta.deprecation = (deprecated.deprecated_at, spec.name)
            self.meta.served_by = spec.name

    async def finish(
        self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0, cost: float = 0.0
    ) -> None:
        """Every exit path ends here once: release the slot, settle the budget, log usage."""
        if self.finished:
            return
        self.finished = True
        meta = self.meta
        meta.status = status
        meta.prompt_tokens = prompt_tokens
        meta.completion_tokens = completion_tokens
        meta.cost = cost
        if self.serving.settle_now(self, status, prompt_tokens, completion_tokens, cost):
            return
        # Shielded: a client disconnect cancelling the handler must not skip the release.
        await asyncio.shield(
            self.serving.settle(self, status, prompt_tokens, completion_tokens, cost)
        )

    @property
    def model_name(self) -> str:
        """The model a response names: the route asked for, or the model that served."""
        return self.meta.routed_as or self.spec.name

    @property
    def runtime_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)
