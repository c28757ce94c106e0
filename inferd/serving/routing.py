"""Serving a route: which targets a request may try, in which order, and the fallback.

`plan` keeps the targets the request may use (the data policy: a zero-retention account or
route never reaches a provider not marked zero-retention), orders them by the route's policy
— `ordered` (as declared), `weighted` (a weighted random order), `cheapest` (by the price
book), `fastest` (by each target's p50 time to first output here) — and leaves out targets
cooling down, except the one request that claims a recovered target's probe.

`first_ready` tries them in that order within the retry budget (`route_max_attempts`) until
one has produced its first output: connection errors, timeouts, 429 and 5xx move on to the
next target; any other error is the request's own and is returned as it is. What happens
after the first output reaches the client is the caller's (an error event, never a switch).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from inferd.auth import Principal
from inferd.catalog import Catalog, Price, Route, RouteTarget
from inferd.config import Settings
from inferd.serving.errors import RequestError
from inferd.serving.route_health import RouteHealth
from inferd.serving.upstream import retryable

T = TypeVar("T")


class Router:
    def __init__(self, settings: Settings, health: RouteHealth, catalog: Catalog) -> None:
        self.settings = settings
        self.health = health
        self.catalog = catalog

    async def plan(self, principal: Principal, route: Route) -> list[RouteTarget]:
        keeps_nothing = principal.zero_retention or route.zero_retention
        allowed = [t for t in route.targets if t.keeps_nothing or not keeps_nothing]
        if not allowed:
            whose = "your account" if principal.zero_retention else "this route"
            raise RequestError(
                403,
                f"No target of `{route.name}` meets the zero-retention policy of {whose}.",
                code="data_policy",
                param="model",
            )
        now = time.time()
        chosen: list[RouteTarget] = []
        for target in self.order(route, allowed):
            phase = self.health.phase(route, target, now)
            if phase == "healthy" or (
                phase == "half_open" and await self.health.claim_probe(route, target)
            ):
                chosen.append(target)
        if not chosen:
            raise RequestError(
                503,
                f"Every target of `{route.name}` is cooling down after failures; retry shortly.",
                code="route_unavailable",
            )
        return chosen[: self.settings.route_max_attempts]

    def order(self, route: Route, targets: list[RouteTarget]) -> list[RouteTarget]:
        if route.policy == "weighted" and len(targets) > 1:
            # Weighted sampling without replacement (Efraimidis-Spirakis keys).
            return sorted(targets, key=lambda t: -(random.random() ** (1.0 / t.weight)))
        if route.policy == "cheapest":
            # stable: the declared order breaks ties
            return sorted(targets, key=lambda t: _price(self.price(route, t)))
        if route.policy == "fastest":
            # Unmeasured targets first, so each gets measured.
            return sorted(targets, key=lambda t: self.health.p50_ms(route, t) or 0.0)
        return targets

    async def first_ready(
        self,
        route: Route,
        targets: list[RouteTarget],
        start: Callable[[RouteTarget], Awaitable[T]],
    ) -> tuple[RouteTarget, T]:
        """The first target whose `start` succeeds (it returns once output has begun)."""
        failures: list[str] = []
        last: RequestError | None = None
        for target in targets:
            began = time.perf_counter()
            try:
                result = await start(target)
            except RequestError as exc:
                if not retryable(exc):
                    raise
                await self.health.failure(route, target, exc.code or str(exc.status))
                failures.append(f"{target.label}: {exc.status}")
                last = exc
                continue
            self.health.success(route, target, (time.perf_counter() - began) * 1000)
            return target, result
        assert last is not None
        if len(failures) == 1:
            raise last
        error = RequestError(
            last.status if last.status in (429, 503) else 502,
            f"No target of `{route.name}` could serve the request ({'; '.join(failures)}).",
            code="route_failed",
        )
        error.headers = last.headers
        raise error

    async def failed_midway(self, route: Route, target: RouteTarget, error: RequestError) -> None:
        """A target failed after its output began (the client saw an error event)."""
        if retryable(error):
            await self.health.failure(route, target, error.code or str(error.status))

    def price(self, route: Route, target: RouteTarget) -> Price:
        """A provider's price as the route declares it; a model here's from the price book."""
        if target.external:
            return target.price
        spec = self.catalog.find(target.model, route.account_id)
        return spec.price if spec is not None else target.price


def _price(price: Price) -> float:
    return price.input_per_1m + price.output_per_1m + price.per_request * 1e6
