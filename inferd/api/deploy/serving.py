"""Handlers of the deployments API: parse, call the registry, render the deploy object."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.deploy.protocol import (
    DeployListQuery,
    DeployLLM,
    DeployLora,
    DeployObject,
    DeploySettings,
    DeployUpdate,
)
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.control.plane import ControlPlane
from inferd.control.registry import DeployError, ScaleSettings, VersionConfig, VersionRecord


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _control(gateway: Gateway) -> ControlPlane:
    assert gateway.control is not None
    return gateway.control


async def _owner(request: Request) -> Principal:
    return await _gateway(request).key_holder(request, "Scoped JWTs cannot manage deployments.")


async def _call(fn, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except DeployError as exc:
        raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None


def _settings(wire: DeploySettings, base: ScaleSettings | None = None) -> ScaleSettings:
    given = wire.model_dump(exclude_none=True)
    merged = {**(base.model_dump() if base else {}), **given}
    try:
        return ScaleSettings.model_validate(merged)
    except ValueError as exc:
        raise APIError(
            400, f"Invalid settings: {exc.errors()[0]['msg']}.", code="invalid_parameter"
        ) from None


def render(control: ControlPlane, record: VersionRecord) -> DeployObject:
    running, pending = control.reconciler.instances(record.deploy_id)
    config = record.config
    return {
        "deploy_id": record.deploy_id,
        "model_name": record.full_name,
        "version": record.version,
        "type": config.kind,
        "base_model": config.base_model,
        "task": "text-generation",
        "status": record.status,
        "fail_reason": record.fail_reason,
        "status_reason": control.reconciler.note(record.deploy_id),
        "instances": {
            "running": running,
            "pending": pending,
            "list": control.reconciler.instance_list(record.deploy_id),
        },
        "download": _download(control, record.deploy_id),
        "config": {
            "gpu": config.gpu,
            "num_gpus": config.num_gpus,
            "max_batch_size": config.max_batch_size,
            "hf_repo": config.repo,
            "hf_revision": config.revision,
            "commit": config.commit,
        },
        "settings": record.settings.model_dump(),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _download(control: ControlPlane, deploy_id: str) -> dict[str, int] | None:
    progress = control.reconciler.progress.get(deploy_id)
    return None if progress is None else {"bytes": progress[0], "total": progress[1]}


async def deploy_llm(request: Request) -> Response:
    principal = await _owner(request)
    gateway = _gateway(request)
    control = _control(gateway)
    body = await gateway.read_json(request, DeployLLM)
    config = VersionConfig(
        kind="llm",
        gpu=body.gpu,
        num_gpus=body.num_gpus,
        max_batch_size=body.max_batch_size,
        repo=body.hf.repo,
        revision=body.hf.revision,
    )
    record = await _call(
        control.registry.create,
        principal.account_id,
        body.model_name,
        config,
        _settings(body.settings),
        body.hf.token,
    )
    await control.reconciler.changed()
    return JSONResponse(render(control, record))


async def deploy_list(request: Request) -> Response:
    principal = await _owner(request)
    gateway = _gateway(request)
    query = gateway.validate(DeployListQuery, dict(request.query_params))
    control = _control(gateway)
    records = await _call(control.registry.list, principal.account_id, query.status)
    return JSONResponse([render(control, r) for r in records])


async def deploy_get(request: Request) -> Response:
    principal = await _owner(request)
    control = _control(_gateway(request))
    record = await _call(control.registry.get, principal.account_id, _deploy_id(request))
    return JSONResponse(render(control, record))


async def deploy_update(request: Request) -> Response:
    principal = await _owner(request)
    gateway = _gateway(request)
    control = _control(gateway)
    body = await gateway.read_json(request, DeployUpdate)
    deploy_id = _deploy_id(request)
    current = await _call(control.registry.get, principal.account_id, deploy_id)
    settings = _settings(body.settings, current.settings)
    record = await _call(
        control.registry.update_settings, principal.account_id, deploy_id, settings
    )
    await control.reconciler.changed()
    return JSONResponse(render(control, record))


async def _set_desired(request: Request, desired: str) -> Response:
    principal = await _owner(request)
    control = _control(_gateway(request))
    record = await _call(
        control.registry.set_desired, principal.account_id, _deploy_id(request), desired
    )
    await control.reconciler.changed()
    return JSONResponse(render(control, record))


async def deploy_delete(request: Request) -> Response:
    return await _set_desired(request, "deleted")


async def deploy_stop(request: Request) -> Response:
    return await _set_desired(request, "stopped")


async def deploy_start(request: Request) -> Response:
    return await _set_desired(request, "running")


async def gpu_availability(request: Request) -> Response:
    await _owner(request)
    control = _control(_gateway(request))
    return JSONResponse(
        {
            "gpus": [
                {
                    "gpu_config": pool.name,
                    "usd_per_hour": pool.usd_per_hour,
                    "available": control.containers.free(pool),
                    "total": pool.count,
                    "emulated": pool.emulated,
                }
                for pool in control.pools
            ]
        }
    )


async def deploy_lora(request: Request) -> Response:
    """Register a LoRA adapter on a base model this server serves (its adapter_config.json
    names it); it is loaded into the base's running replicas."""
    principal = await _owner(request)
    gateway = _gateway(request)
    control = _control(gateway)
    body = await gateway.read_json(request, DeployLora)
    owner = await _call(control.registry.owner_of, principal.account_id)
    name = body.lora_model_name
    if "/" in name and not name.startswith(owner + "/"):
        raise APIError(
            400,
            f"`lora_model_name` must be a name, or start with your owner `{owner}/`.",
            code="invalid_parameter",
            param="lora_model_name",
        )
    try:
        commit, base = await asyncio.to_thread(
            control.adapter_source, body.hf_model_name, body.hf_token
        )
    except ValueError as exc:
        raise APIError(400, str(exc), code="invalid_adapter", param="hf_model_name") from None
    config = VersionConfig(
        kind="lora",
        gpu="shared",
        num_gpus=0,
        max_batch_size=1,
        repo=body.hf_model_name,
        commit=commit,
        base_model=base,
    )
    record = await _call(
        control.registry.create,
        principal.account_id,
        name,
        config,
        ScaleSettings(),
        body.hf_token,
    )
    await control.reconciler.changed()
    return JSONResponse(render(control, record))


async def lora_list(request: Request) -> Response:
    principal = await _owner(request)
    control = _control(_gateway(request))
    records = await _call(control.registry.list, principal.account_id, None)
    return JSONResponse([render(control, r) for r in records if r.config.kind == "lora"])


async def lora_delete(request: Request) -> Response:
    principal = await _owner(request)
    control = _control(_gateway(request))
    owner = await _call(control.registry.owner_of, principal.account_id)
    name = request.path_params["name"]
    full_name = name if name.startswith(owner + "/") else f"{owner}/{name}"
    records = await _call(control.registry.by_name, principal.account_id, full_name)
    adapters = [r for r in records if r.config.kind == "lora"]
    if not adapters:
        raise APIError(404, f"No LoRA model `{full_name}`.", code="not_found", param="name")
    deleted = [
        await _call(control.registry.set_desired, principal.account_id, r.deploy_id, "deleted")
        for r in adapters
    ]
    await control.reconciler.changed()
    return JSONResponse([render(control, r) for r in deleted])


def _deploy_id(request: Request) -> str:
    return request.path_params["deploy_id"]
