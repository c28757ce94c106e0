"""Handlers of the routes API: parse, call the route registry, render; then publish the
change so this gateway serves it at once (others within a reconcile interval)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.api.routing.protocol import RouteIn, RouteObject, RouteReplace, TargetHealthOut
from inferd.auth import Principal
from inferd.catalog import Price, Route
from inferd.control.plane import ControlPlane
from inferd.control.routes import RouteDraft, RouteError, TargetDraft


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _caller(request: Request) -> tuple[Principal, ControlPlane]:
    gateway = _gateway(request)
    principal = await gateway.key_holder(request, "Scoped JWTs cannot manage routes.")
    if gateway.control is None:
        raise APIError(503, "This server runs no control plane.", code="unavailable")
    return principal, gateway.control


async def _call(fn, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except RouteError as exc:
        raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None


def _draft(body: RouteIn, name: str) -> RouteDraft:
    return RouteDraft(
        name=name,
        targets=[
            TargetDraft(
                model=t.model,
                base_url=t.base_url,
                api_key=t.api_key,
                weight=t.weight,
                zero_retention=t.zero_retention,
                price=Price(**t.price.model_dump()) if t.price else Price(),
            )
            for t in body.targets
        ],
        policy=body.policy,
        task=body.task,
        zero_retention=body.zero_retention,
        deprecated_at=_utc(body.deprecated_at),
    )


def render(route: Route) -> RouteObject:
    return {
        "object": "route",
        "name": route.name,
        "public": route.public,
        "source": route.source,
        "task": route.task,
        "policy": route.policy,
        "zero_retention": route.zero_retention,
        "deprecated_at": _ts(route.deprecated_at),
        "targets": [
            {
                "model": t.model,
                "base_url": t.base_url,
                "has_api_key": bool(t.api_key),
                "weight": t.weight,
                "zero_retention": t.keeps_nothing,
                "price": {
                    "input_per_1m": t.price.input_per_1m,
                    "output_per_1m": t.price.output_per_1m,
                    "per_request": t.price.per_request,
                },
            }
            for t in route.targets
        ],
        "created_at": _ts(route.created_at),
        "updated_at": _ts(route.updated_at),
    }


async def create_route(request: Request) -> Response:
    principal, control = await _caller(request)
    body = await _gateway(request).read_json(request, RouteIn)
    route = await _call(control.routes.create, principal, _draft(body, body.name))
    await control.publish_routes()
    return JSONResponse(render(route), status_code=201)


async def list_routes(request: Request) -> Response:
    principal, control = await _caller(request)
    routes = control.routes.visible(principal)
    return JSONResponse({"object": "list", "data": [render(r) for r in routes]})


async def get_route(request: Request) -> Response:
    principal, control = await _caller(request)
    route = await _call(control.routes.get, principal, request.path_params["name"])
    return JSONResponse(render(route))


async def replace_route(request: Request) -> Response:
    principal, control = await _caller(request)
    name = request.path_params["name"]
    body = await _gateway(request).read_json(request, RouteReplace)
    if body.name is not None and body.name != name:
        raise APIError(400, "A route's name cannot change.", code="invalid_parameter", param="name")
    route = await _call(control.routes.replace, principal, name, _draft(body, name))
    await control.publish_routes()
    return JSONResponse(render(route))


async def delete_route(request: Request) -> Response:
    principal, control = await _caller(request)
    route = await _call(control.routes.delete, principal, request.path_params["name"])
    await control.publish_routes()
    return JSONResponse(render(route))


async def route_health(request: Request) -> Response:
    principal, control = await _caller(request)
    route = await _call(control.routes.get, principal, request.path_params["name"])
    health = _gateway(request).serving.router.health
    await health.refresh(route)
    targets: list[TargetHealthOut] = []
    for target in route.targets:
        report = health.report(route, target)
        targets.append(
            {
                "model": target.model,
                "base_url": target.base_url,
                "served_by": target.label,
                "state": report.state,  # type: ignore[typeddict-item]
                "failures": report.failures,
                "cooldown_until": _ts(_moment(report.cooldown_until)),
                "last_error": report.last_error,
                "p50_ms": round(report.p50_ms, 3) if report.p50_ms is not None else None,
                "samples": report.samples,
            }
        )
    return JSONResponse({"name": route.name, "policy": route.policy, "targets": targets})


def _moment(unix: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ts(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
