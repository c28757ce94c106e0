"""Deployments: the team's custom LLMs and LoRA adapters (status, instances, why not running),
new ones from a form, and per version scale, stop, start and delete — the registry and the
reconciler called as /deploy does (api/deploy/serving.py).

The table refreshes itself while a version is on its way somewhere (`data-refresh`, a few lines
of static/dash.js): `GET /dash/deployments/table` renders just that part of the page."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from inferd.api.dash.render import Dash, blocking, fragment, view
from inferd.api.deploy.protocol import DeployLLM, DeployLora
from inferd.api.deploy.serving import render
from inferd.control.plane import ControlPlane
from inferd.control.registry import DeployError, ScaleSettings, VersionConfig, VersionRecord

# Statuses a version rests in: nothing changes until someone asks.
FINAL = ("running", "stopped", "failed", "deleted")


def _control(dash: Dash) -> ControlPlane:
    control = dash.gateway.control
    assert control is not None  # every app builds one (api/app.py)
    return control


def moving(record: VersionRecord, row: dict[str, Any]) -> bool:
    """Whether the version is on its way somewhere (the table keeps refreshing)."""
    if record.status not in FINAL:
        return True
    if record.desired == "running":
        return record.status == "running" and row["instances"]["pending"] > 0
    return record.status not in ("stopped", "failed")  # a stop or delete not done yet


async def _rows(dash: Dash) -> list[dict[str, Any]]:
    control = _control(dash)
    records = await blocking(control.registry.list, dash.session.account_id, None)
    rows = []
    for record in records:
        row = dict(render(control, record))
        row["desired"] = record.desired
        row["moving"] = moving(record, row)
        rows.append(row)
    return rows


def _pools(control: ControlPlane) -> list[dict[str, Any]]:
    return [
        {
            "name": pool.name,
            "usd_per_hour": pool.usd_per_hour,
            "free": control.containers.free(pool),
            "total": pool.count,
            "emulated": pool.emulated,
        }
        for pool in control.pools
    ]


async def _page(dash: Dash, status: int = 200, **values: Any) -> Response:
    control = _control(dash)
    rows = await _rows(dash)
    owner = await blocking(control.registry.owner_of, dash.session.account_id)
    lora_bases = [spec.name for spec in dash.gateway.catalog if "lora" in spec.tags]
    opened = values.pop("opened", None) or dash.request.query_params.get("new")
    return dash.page(
        "deployments.html",
        status=status,
        title="Deployments",
        rows=rows,
        moving=any(r["moving"] for r in rows),
        pools=_pools(control),
        owner=owner,
        lora_bases=lora_bases,
        opened=opened,
        **values,
    )


@view
async def deployments(dash: Dash) -> Response:
    return await _page(dash)


@view
async def table(dash: Dash) -> Response:
    rows = await _rows(dash)
    return fragment(
        dash,
        "deployments.html",
        "table",
        rows=rows,
        moving=any(r["moving"] for r in rows),
    )


def _int(form: dict[str, str], name: str, default: int) -> int | str:
    """A number field as an int; left as given (pydantic names the problem) when not one."""
    raw = form.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return raw


@view
async def create_llm(dash: Dash) -> Response:
    form = await dash.form()
    control = _control(dash)
    try:
        body = DeployLLM.model_validate(
            {
                "model_name": form.get("model_name", "").strip(),
                "gpu": form.get("gpu", ""),
                "num_gpus": _int(form, "num_gpus", 1),
                "max_batch_size": _int(form, "max_batch_size", 16),
                "hf": {
                    "repo": form.get("hf_repo", "").strip(),
                    "revision": form.get("hf_revision", "").strip() or None,
                    "token": form.get("hf_token", "").strip() or None,
                },
                "settings": {
                    "min_instances": _int(form, "min_instances", 0),
                    "max_instances": _int(form, "max_instances", 1),
                },
            }
        )
        settings = ScaleSettings.model_validate(body.settings.model_dump(exclude_none=True))
    except ValidationError as exc:
        return await _page(dash, 400, error=invalid(exc), opened="custom-llm")
    config = VersionConfig(
        kind="llm",
        gpu=body.gpu,
        num_gpus=body.num_gpus,
        max_batch_size=body.max_batch_size,
        repo=body.hf.repo,
        revision=body.hf.revision,
    )
    try:
        record = await blocking(
            control.registry.create,
            dash.session.account_id,
            body.model_name,
            config,
            settings,
            body.hf.token,
        )
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message, opened="custom-llm")
    await control.reconciler.changed()
    return await _page(
        dash, notice=f"`{record.full_name}` version {record.version} is being deployed."
    )


@view
async def create_lora(dash: Dash) -> Response:
    form = await dash.form()
    control = _control(dash)
    try:
        body = DeployLora.model_validate(
            {
                "lora_model_name": form.get("lora_model_name", "").strip(),
                "hf_model_name": form.get("hf_model_name", "").strip(),
                "hf_token": form.get("hf_token", "").strip() or None,
            }
        )
    except ValidationError as exc:
        return await _page(dash, 400, error=invalid(exc), opened="lora")
    try:
        owner = await blocking(control.registry.owner_of, dash.session.account_id)
        name = body.lora_model_name
        if "/" in name and not name.startswith(owner + "/"):
            return await _page(
                dash,
                400,
                error=f"The LoRA model name must be a name, or start with your owner `{owner}/`.",
                opened="lora",
            )
        try:
            commit, base = await blocking(control.adapter_source, body.hf_model_name, body.hf_token)
        except ValueError as exc:
            return await _page(dash, 400, error=str(exc), opened="lora")
        config = VersionConfig(
            kind="lora",
            gpu="shared",
            num_gpus=0,
            max_batch_size=1,
            repo=body.hf_model_name,
            commit=commit,
            base_model=base,
        )
        record = await blocking(
            control.registry.create,
            dash.session.account_id,
            name,
            config,
            ScaleSettings(),
            body.hf_token,
        )
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message, opened="lora")
    await control.reconciler.changed()
    return await _page(dash, notice=f"LoRA adapter `{record.full_name}` (on {base}) is uploading.")


@view
async def scale(dash: Dash) -> Response:
    form = await dash.form()
    control = _control(dash)
    deploy_id = dash.request.path_params["deploy_id"]
    try:
        current = await blocking(control.registry.get, dash.session.account_id, deploy_id)
        try:
            settings = ScaleSettings.model_validate(
                {
                    **current.settings.model_dump(),
                    "min_instances": _int(form, "min_instances", current.settings.min_instances),
                    "max_instances": _int(form, "max_instances", current.settings.max_instances),
                }
            )
        except ValidationError as exc:
            return await _page(dash, 400, error=invalid(exc))
        record = await blocking(
            control.registry.update_settings, dash.session.account_id, deploy_id, settings
        )
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message)
    await control.reconciler.changed()
    return await _page(
        dash,
        notice=f"`{record.full_name}` version {record.version} now runs "
        f"{settings.min_instances}-{settings.max_instances} instances.",
    )


DONE = {"running": "is starting", "stopped": "is stopping", "deleted": "was deleted"}


async def _set_desired(dash: Dash, desired: str) -> Response:
    await dash.form()
    control = _control(dash)
    deploy_id = dash.request.path_params["deploy_id"]
    try:
        record = await blocking(
            control.registry.set_desired, dash.session.account_id, deploy_id, desired
        )
    except DeployError as exc:
        return await _page(dash, exc.status, error=exc.message)
    await control.reconciler.changed()
    return await _page(
        dash, notice=f"`{record.full_name}` version {record.version} {DONE[desired]}."
    )


@view
async def stop(dash: Dash) -> Response:
    return await _set_desired(dash, "stopped")


@view
async def start(dash: Dash) -> Response:
    return await _set_desired(dash, "running")


@view
async def delete(dash: Dash) -> Response:
    return await _set_desired(dash, "deleted")


def invalid(exc: ValidationError) -> str:
    """A form's first problem, named by its field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"`{where}`: {message}." if where else f"{message}."
