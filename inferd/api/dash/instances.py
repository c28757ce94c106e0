"""GPU instances: the team's containers (state, price, the SSH login once running, why one
failed), a new one from a form (its SSH key becomes the `ubuntu` user's, through cloud-init)
and terminate after typing "confirm" — the container manager called as /v1/containers does
(api/containers/serving.py). The table refreshes itself while a container changes state."""

from __future__ import annotations

from typing import Any

import yaml
from starlette.responses import Response

from inferd.api.containers.serving import render
from inferd.api.dash.render import Dash, blocking, fragment, view
from inferd.control.containers import ContainerManager, ContainersUnavailable
from inferd.control.registry import DeployError

MOVING = ("creating", "starting", "shutting_down")
CONFIRM = "confirm"
KEY_TYPES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-")


def _manager(dash: Dash) -> ContainerManager:
    control = dash.gateway.control
    assert control is not None  # every app builds one (api/app.py)
    return control.containers


async def _rows(dash: Dash) -> list[dict[str, Any]]:
    """Live containers and failed ones (with their reason), newest first; deleted ones not."""
    manager = _manager(dash)
    active = await blocking(manager.list, dash.session.account_id, True)
    inactive = await blocking(manager.list, dash.session.account_id, False)
    records = [*active, *(r for r in inactive if r.state == "failed")]
    records.sort(key=lambda r: r.created_at, reverse=True)
    return [dict(render(r)) for r in records]


def _configs(manager: ContainerManager) -> list[dict[str, Any]]:
    configs = []
    for gpu_config, pool, count in manager.configs():
        free = manager.free(pool)
        configs.append(
            {
                "gpu_config": gpu_config,
                "price_per_hour": round(pool.usd_per_hour * count, 6),
                "available": free >= count,
            }
        )
    return configs


async def _page(dash: Dash, status: int = 200, **values: Any) -> Response:
    manager = _manager(dash)
    rows = await _rows(dash)
    if manager.unavailable is not None and status == 200:
        status = 503
    return dash.page(
        "instances.html",
        status=status,
        title="GPU instances",
        rows=rows,
        moving=any(r["state"] in MOVING for r in rows),
        unavailable=manager.unavailable,
        configs=_configs(manager) if manager.unavailable is None else [],
        images=manager.images(),
        **values,
    )


@view
async def instances(dash: Dash) -> Response:
    return await _page(dash)


@view
async def table(dash: Dash) -> Response:
    rows = await _rows(dash)
    return fragment(
        dash,
        "instances.html",
        "table",
        rows=rows,
        moving=any(r["state"] in MOVING for r in rows),
    )


def cloud_config(ssh_keys: str) -> str:
    """cloud-init user data: the `ubuntu` user, logging in with these public keys (one a
    line), with passwordless sudo. ValueError when a line is not a public key."""
    keys = [line.strip() for line in ssh_keys.splitlines() if line.strip()]
    if not keys:
        raise ValueError("Paste your public SSH key: it is how you log in to the container.")
    for key in keys:
        if not key.startswith(KEY_TYPES) or len(key.split()) < 2:
            raise ValueError(
                "That is not a public SSH key (one a line, like `ssh-ed25519 AAAA... you@host`); "
                "paste the .pub file, never the private key."
            )
    user = {
        "name": "ubuntu",
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "ssh_authorized_keys": keys,
    }
    return "#cloud-config\n" + yaml.safe_dump({"users": [user]}, sort_keys=False)


@view
async def create(dash: Dash) -> Response:
    form = await dash.form()
    manager = _manager(dash)
    try:
        user_data = cloud_config(form.get("ssh_key", ""))
    except ValueError as exc:
        return await _page(dash, 400, error=str(exc), opened=True)
    name = form.get("name", "").strip()
    try:
        over = await manager.over_budget(dash.session.account_id)
        await blocking(
            manager.create,
            dash.session.account_id,
            name,
            form.get("gpu_config", ""),
            form.get("container_image", ""),
            user_data,
            over,
        )
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message, opened=True)
    except ContainersUnavailable as exc:
        return await _page(dash, 503, error=str(exc))
    manager.poke()
    return await _page(dash, notice=f"Container `{name}` is being created.")


@view
async def terminate(dash: Dash) -> Response:
    form = await dash.form()
    manager = _manager(dash)
    container_id = dash.request.path_params["container_id"]
    if form.get("confirm") != CONFIRM:
        return await _page(dash, 400, error=f'Type "{CONFIRM}" to terminate a container.')
    try:
        record = await blocking(manager.terminate, dash.session.account_id, container_id)
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message)
    manager.poke()
    return await _page(dash, notice=f"Container `{record.name}` is shutting down.")
