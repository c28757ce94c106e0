"""The request path, callable without HTTP: principal → resolve → limits → budget → submit →
settle. The OpenAI and native routers, and later webhook jobs, batch lines and the dashboard's
playground, all run requests through `Serving`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TypeVar

import msgspec
from redis.exceptions import RedisError

from inferd import metrics
from inferd.auth import Principal
from inferd.billing.budget import Budget, OverBudget, Scope, refusal
from inferd.billing.ledger import UsageLedger, UsageRecord
from inferd.billing.pricing import max_cost
from inferd.catalog import Catalog, ModelNotFound, ModelSpec, Route, RouteTarget
from inferd.config import Settings
from inferd.limits import ConcurrencyLimiter, InProcessLimiter, RateLimited
from inferd.requests import (
    Embed,
    Event,
    Failed,
    Generate,
    InferenceRequest,
    ModelInfo,
    TaskRequest,
    task_of,
)
from inferd.runtime import Call, ModelUnavailable, Runtime
from inferd.serving.admission import Admission, RequestMeta, new_request_id
from inferd.serving.embeddings import EmbeddingsResult, run_embeddings
from inferd.serving.errors import RequestError, from_failed, out_of_order
from inferd.serving.generation import Run, start_run
from inferd.serving.route_health import RouteHealth
from inferd.serving.routing import Router
from inferd.serving.tasks import TaskOutcome, run_task
from inferd.serving.upstream import ProviderStream, Upstream

log = logging.getLogger("inferd.serving")

# Budget reservations only: images are billed at the tokens the model actually gave them.
TOKENS_PER_IMAGE_BOUND = 2048

Target = str | ModelSpec  # a model string to resolve, or a spec `resolve` already returned
E = TypeVar("E", bound=Event)


class Serving:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        runtime: Runtime,
        limiter: ConcurrencyLimiter,
        budget: Budget,
        ledger: UsageLedger,
        health: RouteHealth | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.runtime = runtime
        self.limiter = limiter
        self.budget = budget
        self.ledger = ledger
        self.draining = False
        self._sync_settle = isinstance(limiter, InProcessLimiter)
        health = health or RouteHealth(
            catalog,
            settings.route_failure_threshold,
            settings.route_cooldown_s,
            settings.route_first_byte_timeout_s,
        )
        self.router = Router(settings, health, catalog)
        self.upstream = Upstream(settings)

    # -- the entry points ---------------------------------------------------------------------

    async def generate(
        self, principal: Principal, target: Target, requests: list[Generate], meta: RequestMeta
    ) -> Run:
        """`n` generations of one prompt (one per request), admitted as one request. Returns
        once every generation has started, so a refused prompt is an error, not a stream."""
        spec = self._target(principal, target, requests[0])
        first = requests[0]
        max_tokens = first.params.max_tokens or first.params.default_max_tokens
        admission = await self.admit(
            principal,
            spec,
            meta,
            prompt_bound=generation_bound(first),
            max_output=max_tokens * len(requests) if max_tokens else None,
        )
        return await start_run(self, admission, requests)

    async def embed(
        self, principal: Principal, target: Target, request: Embed, meta: RequestMeta
    ) -> EmbeddingsResult:
        spec = self._target(principal, target, request)
        bound = sum(len(t.encode()) + 2 for t in request.texts)
        admission = await self.admit(principal, spec, meta, prompt_bound=bound)
        return await run_embeddings(self, admission, request)

    async def run_task(
        self, principal: Principal, target: Target, request: TaskRequest, meta: RequestMeta
    ) -> TaskOutcome:
        spec = self._target(principal, target, request)
        admission = await self.admit(principal, spec, meta, prompt_bound=text_bound(request))
        return await run_task(self, admission, request)

    # -- the steps ----------------------------------------------------------------------------

    def lookup(self, principal: Principal, model: str, task: str | None) -> ModelSpec | Route:
        """The model string, once per request: a model, or a route (which the OpenAI
        endpoints serve with fallbacks). 404 unknown, 403 not allowed for this token, 400 when
        it serves another task than `task` (None: any task)."""
        spec = self.catalog.find(model, principal.account_id)
        if spec is not None:
            return self._allowed(principal, spec, task)
        route = self.catalog.route(model, principal.account_id)
        if route is None:
            raise RequestError(
                404, str(ModelNotFound(model)), code="model_not_found", param="model"
            )
        if not principal.allows(route.name):
            raise _not_allowed(route.name)
        if task is not None and route.task != task:
            raise RequestError(
                400,
                f"The route `{route.name}` serves {route.task} and not this endpoint.",
                code="wrong_task",
                param="model",
            )
        return route

    def resolve(self, principal: Principal, model: str, task: str | None) -> ModelSpec:
        """`lookup` for the endpoints and jobs that serve a route by one model here: its first
        target here in the route's order, without fallbacks."""
        found = self.lookup(principal, model, task)
        if isinstance(found, ModelSpec):
            return found
        for target in self.router.order(found, list(found.targets)):
            if not target.external:
                return self.route_target(found, target)
        raise RequestError(
            400,
            f"The route `{found.name}` is served by other providers: call it through the "
            "OpenAI-compatible endpoints (/v1/openai/...).",
            code="wrong_endpoint",
            param="model",
        )

    def route_target(self, route: Route, target: RouteTarget) -> ModelSpec:
        """The model here that serves a route's local target (as its owner sees it)."""
        spec = self.catalog.find(target.model, route.account_id)
        if spec is None or spec.task != route.task:
            raise RequestError(
                503,
                f"The model `{target.model}` behind `{route.name}` is not served here now.",
                code="model_unavailable",
            )
        if spec.deploy_id is not None:
            self._check_deployed(spec)
        return spec

    def _allowed(self, principal: Principal, spec: ModelSpec, task: str | None) -> ModelSpec:
        if not principal.allows(spec.name) and not (
            # A token allowed the deprecated model keeps working once its replacement serves.
            spec.stands_in_for is not None and principal.allows(spec.stands_in_for.name)
        ):
            raise _not_allowed(spec.name)
        if task is not None and spec.task != task:
            raise RequestError(
                400,
                f"The model `{spec.name}` is a {spec.task} model and does not serve this endpoint.",
                code="wrong_task",
                param="model",
            )
        if spec.deploy_id is not None:
            self._check_deployed(spec)
        return spec

    def _check_deployed(self, spec: ModelSpec) -> None:
        """A deployed version answers only once it can: 409 stopped or failed (with the
        reason), 429 with Retry-After while its weights are still being fetched."""
        deployed = self.catalog.deployed(spec.key)
        status = deployed.status if deployed else "deleted"
        if status in ("stopped", "failed", "deleted"):
            reason = f": {deployed.fail_reason}" if deployed and deployed.fail_reason else "."
            raise RequestError(
                409,
                f"The deployment `{spec.name}` (deploy_id {spec.deploy_id}) is {status}{reason}",
                code=f"deployment_{status}",
                param="model",
            )
        if status in ("initializing", "downloading"):
            raise RequestError(
                429,
                f"The deployment `{spec.name}` is {status}; retry in a moment.",
                code="deployment_starting",
            )

    def info(self, spec: ModelSpec) -> ModelInfo | None:
        return self.runtime.info(spec.runtime_key)

    def features(self, spec: ModelSpec) -> list[str]:
        """The catalog's tags plus what the loaded engine reports it can do."""
        info = self.info(spec)
        return sorted({*spec.tags, *(info.features if info else ())})

    def context_length(self, spec: ModelSpec) -> int:
        info = self.info(spec)
        return info.context_length if info and info.context_length else spec.context_length

    def require_features(self, spec: ModelSpec, wanted: dict[str, str]) -> None:
        """400 naming the feature when the model cannot do what the request asks for."""
        if not wanted or self.info(spec) is None:
            return  # not loaded yet: the engine refuses what it cannot do itself
        have = self.features(spec)
        for feature, asked_by in wanted.items():
            if feature not in have:
                raise RequestError(
                    400,
                    f"The model `{spec.name}` does not support {feature} ({asked_by}).",
                    code="unsupported_feature",
                    param="model",
                )

    async def check_budget(self, principal: Principal) -> None:
        """402 when a spending limit of the caller is used up already: work queued for later
        (a webhook) is refused at submit rather than failing when it runs."""
        for scope in budget_scopes(principal):
            try:
                spent = await self.budget.spent(scope.key)
            except RedisError:
                raise _store_down("budget") from None
            if spent >= scope.limit:
                raise RequestError(402, str(refusal(scope, spent)), code="spending_limit_reached")

    async def admit(
        self,
        principal: Principal,
        spec: ModelSpec,
        meta: RequestMeta,
        *,
        prompt_bound: int = 0,
        max_output: int | None = None,
    ) -> Admission:
        """limits → budget. `prompt_bound` (an upper bound on input tokens) and `max_output`
        size the budget reservation when a spending limit applies."""
        if self.draining:
            raise RequestError(503, "The server is shutting down.", code="draining")
        meta.model = spec.name
        meta.label = metrics.model_label(spec.name, spec.deploy_id)
        meta.account = principal.account_id
        reservation = None
        scopes = budget_scopes(principal)
        if scopes:
            output = max_output or min(self.settings.max_output_tokens, spec.context_length)
            amount = max_cost(spec.price, prompt_bound, output)
            try:
                reservation = await self.budget.reserve(scopes, amount)
            except OverBudget as exc:
                raise RequestError(402, str(exc), code="spending_limit_reached") from None
            except RedisError:
                raise _store_down("budget") from None
        try:
            slot = await self.limiter.acquire(
                principal.account_id, spec.name, principal.concurrency_limit
            )
        except (RedisError, RateLimited) as exc:
            if reservation is not None:
                with contextlib.suppress(RedisError):
                    await self.budget.settle(reservation, 0.0)
            if isinstance(exc, RedisError):
                raise _store_down("limits") from None
            metrics.RATE_LIMITED.labels(meta.label).inc()
            raise RequestError(429, "Rate limited", code="rate_limited") from None
        # A webhook request keeps the id its client was given at submit.
        request_id = meta.request_id or new_request_id()
        meta.request_id = request_id
        return Admission(self, principal, spec, request_id, slot, reservation, meta)

    async def submit(self, admission: Admission, request: InferenceRequest) -> Call:
        spec = admission.spec
        deployed = self.catalog.deployed(spec.key) if spec.deploy_id is not None else None
        if spec.adapter_of is not None and isinstance(request, Generate):
            request = msgspec.structs.replace(request, adapter=spec.deploy_id)
        if admission.meta.background and isinstance(request, Generate):
            request = msgspec.structs.replace(request, background=True)
        try:
            if deployed is None:
                return await self.runtime.submit(spec.runtime_key, request)
            # Held while an instance starts, up to the deployment's cold-start timeout counted
            # from the request's arrival; then 429, so the client retries later.
            waited = time.perf_counter() - admission.started
            timeout = max(0.0, deployed.cold_start_s - waited)
            return await self.runtime.submit(spec.runtime_key, request, timeout)
        except ModelUnavailable as exc:
            if deployed is not None:
                raise RequestError(
                    429,
                    f"No instance of `{spec.name}` started in time; retry later.",
                    code="deployment_cold_start",
                ) from None
            raise RequestError(503, str(exc), code="model_unavailable") from None
        except OverflowError:  # msgpack carries 64-bit integers; the wire allows any size
            raise RequestError(
                400, "A number in the request is out of range.", code="invalid_parameter"
            ) from None

    async def call_provider(
        self,
        principal: Principal,
        route: Route,
        target: RouteTarget,
        meta: RequestMeta,
        path: str,
        body: dict,
        *,
        stream: bool,
        prompt_bound: int,
        max_output: int | None,
    ) -> tuple[Admission, dict | ProviderStream]:
        """One hop to an external provider, admitted (limits, budget at the target's price)
        like any request; returns once its output began. A failed hop leaves no trace: its
        slot and reservation are given back, and no usage row is written."""
        spec = route.provider_specs[target.key]
        admission = await self.admit(
            principal, spec, meta, prompt_bound=prompt_bound, max_output=max_output
        )
        meta.served_by = target.label
        try:
            if stream:
                return admission, await self.upstream.stream(target, path, body)
            return admission, await self.upstream.post(target, path, body)
        except BaseException:
            await self.withdraw(admission)
            raise

    async def withdraw(self, admission: Admission) -> None:
        """End an admission that did no work (a failed route hop): no usage row."""
        if admission.finished:
            return
        admission.finished = True
        try:
            await self.limiter.release(
                admission.principal.account_id, admission.spec.name, admission.slot
            )
            if admission.reservation is not None:
                await self.budget.settle(admission.reservation, 0.0)
        except RedisError as exc:
            log.warning(
                "withdrawn while the limits store was away", extra={"error": type(exc).__name__}
            )

    async def unary(self, admission: Admission, request: InferenceRequest, expect: type[E]) -> E:
        """One request, one result event of type `expect`; an error event is raised."""
        call = await self.submit(admission, request)
        try:
            event = await call.result()
        finally:
            call.close()
        if isinstance(event, Failed):
            raise from_failed(event)
        if not isinstance(event, expect):
            raise out_of_order()
        return event

    def settle_now(
        self,
        admission: Admission,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> bool:
        """Settle synchronously when nothing needs awaiting (in-process limits, no budget):
        no task on the hot path, nothing a cancel can skip. False when `settle` must run."""
        if admission.reservation is not None or not self._sync_settle:
            return False
        cost *= admission.meta.price_factor
        self.limiter.release_nowait(admission.principal.account_id, admission.spec.name)  # type: ignore[attr-defined]
        self.ledger.record(
            usage_record(admission, status, prompt_tokens, completion_tokens, cost),
            once=admission.meta.once,
        )
        return True

    async def settle(
        self,
        admission: Admission,
        status: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> None:
        principal = admission.principal
        cost *= admission.meta.price_factor
        # The work is done and is billed whatever the stores say: the ledger row is written
        # first. With Redis away, a slot expires with its lease and the next reservation of
        # the scope is refused (fail closed) until Redis answers again.
        self.ledger.record(
            usage_record(admission, status, prompt_tokens, completion_tokens, cost),
            once=admission.meta.once,
        )
        try:
            await self.limiter.release(principal.account_id, admission.spec.name, admission.slot)
            if admission.reservation is not None:
                await self.budget.settle(admission.reservation, cost)
        except RedisError as exc:
            log.warning(
                "settled while the limits store was away",
                extra={"request_id": admission.request_id, "error": type(exc).__name__},
            )

    def _target(self, principal: Principal, target: Target, request: InferenceRequest) -> ModelSpec:
        if isinstance(target, str):
            spec = self.resolve(principal, target, task_of(request))
        else:
            spec = target
        if isinstance(request, Generate):
            self.require_features(spec, generation_features(request))
        return spec


def generation_features(request: Generate) -> dict[str, str]:
    """Features a generation needs from the model: tag → what asked for it."""
    wanted = {}
    if request.images:
        wanted["vision"] = "image inputs"
    if request.tools:
        wanted["tools"] = "`tools`"
    if request.params.constraint is not None:
        wanted["json_mode"] = "`response_format`"
    if request.params.logprobs:
        wanted["logprobs"] = "`logprobs`"
    return wanted


def generation_bound(request: Generate) -> int:
    """Upper bound on prompt tokens (a token is at least one byte), for budgets."""
    if request.prompt is not None:
        return len(request.prompt.encode()) + 16
    text = 64 + 2 * len(str(request.tools or ""))
    for turn in request.messages or ():
        content = turn.content
        if isinstance(content, str):
            text += len(content.encode()) + 16
        else:
            text += sum(len(getattr(p, "text", "").encode()) for p in content) + 16
    return text + TOKENS_PER_IMAGE_BOUND * len(request.images)


def text_bound(request: TaskRequest) -> int:
    """Upper bound on a task's billed text units (tokens or characters)."""
    total = 0
    for name in request.__struct_fields__:
        value = getattr(request, name)
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, list):
            total += sum(len(v.encode()) for v in value if isinstance(v, str))
    return total


def budget_scopes(principal: Principal) -> tuple[Scope, ...]:
    scopes = []
    if principal.spending_limit is not None:
        scopes.append(
            Scope(f"acct:{principal.account_id}", principal.spending_limit, "this account")
        )
    if principal.jwt is not None and principal.jwt.spending_limit is not None:
        scopes.append(
            Scope(f"jwt:{principal.jwt.jwt_id}", principal.jwt.spending_limit, "this scoped JWT")
        )
    return tuple(scopes)


def usage_record(
    admission: Admission, status: int, prompt_tokens: int, completion_tokens: int, cost: float
) -> UsageRecord:
    principal = admission.principal
    return UsageRecord(
        request_id=admission.request_id,
        account_id=principal.account_id,
        key_name=principal.key_name,
        jwt_id=principal.jwt.jwt_id if principal.jwt else None,
        model=admission.meta.routed_as or admission.spec.name,
        route=admission.meta.route,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
        started_at=admission.started_at,
        duration_ms=admission.runtime_ms,
        served_by=admission.meta.served_by,
    )


def _not_allowed(model: str) -> RequestError:
    return RequestError(
        403, f"This token may not use the model `{model}`.", code="model_not_allowed", param="model"
    )


def _store_down(what: str) -> RequestError:
    return RequestError(503, f"The {what} store is unavailable; retry.", code="limits_unavailable")
