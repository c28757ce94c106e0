"""Handlers of the GPU containers API: parse, call the container manager, render."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.containers.protocol import (
    ContainerObject,
    CreateContainer,
    ListQuery,
    RenameContainer,
)
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.control.containers import ContainerManager, ContainerRecord, ContainersUnavailable
from inferd.control.registry import DeployError


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _caller(request: Request) -> tuple[Principal, ContainerManager]:
    gateway = _gateway(request)
    principal = await gateway.key_holder(request, "Scoped JWTs cannot manage containers.")
    if gateway.control is None:
        raise APIError(503, "This server runs no control plane.", code="unavailable")
    manager = gateway.control.containers
    if manager.unavailable is not None:
        raise APIError(503, manager.unavailable, code="containers_unavailable")
    return principal, manager


async def _call(fn, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except DeployError as exc:
        raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None
    except ContainersUnavailable as exc:
        raise APIError(503, str(exc), code="containers_unavailable") from None


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def render(record: ContainerRecord) -> ContainerObject:
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "start_ts": _ts(record.start_ts),
        "state_ts": record.state_ts.isoformat(),
        "stop_ts": _ts(record.stop_ts),
        "ip": record.ip,
        "gpu_config": record.gpu_config,
        "price_per_hour": record.price_per_hour,
        "container_image": record.container_image,
        "fail_reason": record.fail_reason,
    }


async def create_container(request: Request) -> Response:
    principal, manager = await _caller(request)
    body = await _gateway(request).read_json(request, CreateContainer)
    over = await manager.over_budget(principal.account_id)
    container_id = await _call(
        manager.create,
        principal.account_id,
        body.name,
        body.gpu_config,
        body.container_image,
        body.cloud_init_user_data,
        over,
    )
    manager.poke()
    return JSONResponse({"container_id": container_id})


async def list_containers(request: Request) -> Response:
    principal, manager = await _caller(request)
    query = _gateway(request).validate(ListQuery, dict(request.query_params))
    records = await _call(manager.list, principal.account_id, query.state == "active")
    return JSONResponse([render(r) for r in records])


async def get_container(request: Request) -> Response:
    principal, manager = await _caller(request)
    record = await _call(manager.get, principal.account_id, request.path_params["container_id"])
    return JSONResponse(render(record))


async def rename_container(request: Request) -> Response:
    principal, manager = await _caller(request)
    body = await _gateway(request).read_json(request, RenameContainer)
    record = await _call(
        manager.rename, principal.account_id, request.path_params["container_id"], body.name
    )
    return JSONResponse(render(record))


async def delete_container(request: Request) -> Response:
    principal, manager = await _caller(request)
    record = await _call(
        manager.terminate, principal.account_id, request.path_params["container_id"]
    )
    manager.poke()
    return JSONResponse(render(record))


async def container_gpu_availability(request: Request) -> Response:
    _, manager = await _caller(request)
    configs = []
    for gpu_config, pool, count in manager.configs():
        free = manager.free(pool)
        configs.append(
            {
                "gpu_config": gpu_config,
                "price_per_hour": round(pool.usd_per_hour * count, 6),
                "available": free >= count,
                "free": free,
                "total": pool.count,
            }
        )
    return JSONResponse({"gpu_configs": configs})


async def container_params(request: Request) -> Response:
    _, manager = await _caller(request)
    return JSONResponse(
        {
            "images": manager.images(),
            "gpu_configs": [gpu_config for gpu_config, _, _ in manager.configs()],
        }
    )
