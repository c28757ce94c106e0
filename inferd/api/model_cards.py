"""Describes served models for `GET /models/{model}` and `GET /v1/openai/models`."""

from __future__ import annotations

from typing import Any

from inferd.api.gateway import Gateway
from inferd.catalog import ModelSpec

CREATED = 1_700_000_000  # catalog entries have no creation time; a fixed epoch keeps ids stable


def model_card(gateway: Gateway, spec: ModelSpec) -> dict[str, Any]:
    serving = gateway.serving
    info = serving.info(spec)
    price = spec.price.model_dump()
    deployment = gateway.runtime.deployments.get(spec.key)
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
    return card


def openai_model(gateway: Gateway, spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.name,
        "object": "model",
        "created": CREATED,
        "owned_by": spec.name.split("/", 1)[0] if spec.deploy_id else "inferd",
        "metadata": model_card(gateway, spec),
    }
