"""Describes served models for `GET /models/{model}` and `GET /v1/openai/models`."""

from __future__ import annotations

from typing import Any

from inferd.api.gateway import Gateway
from inferd.catalog import ModelSpec, Route

CREATED = 1_700_000_000  # catalog entries have no creation time; a fixed epoch keeps ids stable


def model_card(gateway: Gateway, spec: ModelSpec) -> dict[str, Any]:
    # A deprecated model past its date resolves to its replacement: describe the model asked
    # for, whose card says when it was retired and what serves it now.
    spec = spec.stands_in_for or spec
    serving = gateway.serving
    info = serving.info(spec)
    price = spec.price.model_dump()
    deployment = gateway.runtime.deployments.get(spec.runtime_key)
    card: dict[str, Any] = {
        "model_name": spec.name,
        "task": spec.task,
        "type": spec.task,
        "tags": serving.features(spec),
        "description": spec.description,
        "context_length": serving.context_length(spec),
        "max_output_tokens": gateway.settings.max_output_tokens
        if spec.task == "text-generation"
        else None,
        "pricing": {k: v for k, v in price.items() if v},
        "replicas": spec.replicas,
        "ready": deployment is not None and deployment.ready,
    }
    if info is not None and info.dimensions is not None:
        card["dimensions"] = info.dimensions
    if spec.deploy_id is not None:
        card["deploy_id"] = spec.deploy_id
        card["version"] = spec.version
    if spec.deprecated_at is not None:
        card["deprecated_at"] = spec.deprecated_at.isoformat()
        card["replacement"] = spec.replacement
    return card


def openai_model(gateway: Gateway, spec: ModelSpec) -> dict[str, Any]:
    spec = spec.stands_in_for or spec
    return {
        "id": spec.name,
        "object": "model",
        "created": CREATED,
        "owned_by": spec.name.split("/", 1)[0] if spec.deploy_id else "inferd",
        "metadata": model_card(gateway, spec),
    }


def route_card(gateway: Gateway, route: Route) -> dict[str, Any]:
    """A route described like a model: its context and readiness are its targets' here."""
    serving = gateway.serving
    local = [s for t in route.targets if (s := gateway.catalog.find(t.model, route.account_id))]
    health = serving.router.health
    return {
        "model_name": route.name,
        "task": route.task,
        "type": route.task,
        "tags": ["route"],
        "description": f"A route ({route.policy}) over {len(route.targets)} target(s).",
        "context_length": min((serving.context_length(s) for s in local), default=0),
        "max_output_tokens": gateway.settings.max_output_tokens
        if route.task == "text-generation"
        else None,
        "pricing": {},
        "replicas": 0,
        "ready": any(health.phase(route, t) != "cooling_down" for t in route.targets),
        "route_targets": [t.label for t in route.targets],
    }


def openai_route(gateway: Gateway, route: Route) -> dict[str, Any]:
    return {
        "id": route.name,
        "object": "model",
        "created": int(route.created_at.timestamp()) if route.created_at else CREATED,
        "owned_by": "inferd" if route.public else route.name.split("/", 1)[0],
        "metadata": route_card(gateway, route),
    }
