"""schemathesis hooks for tests/reliability/test_stateful.py: most generated create bodies are
steered into ones this server accepts, so the resource exists and the linked operations that
follow (get → update → delete) act on it, instead of every walk ending at the create's 400. The
rest stay as generated, and steered bodies keep the generated values the server may take.

INFERD_ST_OWNER is the account's owner prefix, INFERD_ST_MODEL a model it may route to,
INFERD_ST_POOL an accelerator pool of the server, INFERD_ST_IMAGE a container image it offers.
The choice hashes the generated case, so a seed still replays the same run.

With INFERD_ST_CREATE_KEY set (the unauthenticated run), half the creates carry that key (and
the header MARKER, for the report), so resources exist; every other request goes without
credentials or with generated ones, the linked steps on those resources included, and must be
refused with 401."""

from __future__ import annotations

import itertools
import json
import os
import re
import zlib
from typing import Any

import schemathesis

OWNER = os.environ.get("INFERD_ST_OWNER", "")
MODEL = os.environ.get("INFERD_ST_MODEL", "")
POOL = os.environ.get("INFERD_ST_POOL", "")
IMAGE = os.environ.get("INFERD_ST_IMAGE", "")
CREATE_KEY = os.environ.get("INFERD_ST_CREATE_KEY", "")
MARKER = "X-Stateful-As"
CREATES = {
    "/v1/routes",
    "/v1/api-tokens",
    "/v1/scoped-jwt",
    "/v1/files",
    "/v1/openai/files",
    "/v1/batches",
    "/v1/openai/batches",
    "/deploy/llm",
    "/v1/containers",
}
STEER_ONE_IN = 4  # one generated body in four is left as generated
# Names that must be unique, and their longest: a name generated twice (Hypothesis replays the
# prefixes of earlier scenarios) gets a fresh suffix when sent, so a create succeeds again
# instead of turning into a 409, which would change which links can follow.
UNIQUE = {("POST", "/v1/routes"): 300, ("POST", "/v1/api-tokens"): 200}
SENT = itertools.count(1)


def _hash(case: Any) -> int:
    return zlib.crc32(repr((case.operation.path, case.path_parameters, case.body)).encode())


def _slug(value: Any, fallback: str) -> str:
    """A name part of 1-40 letters, digits, `.`, `_` or `-` made from a generated value."""
    text = re.sub(r"[^A-Za-z0-9._-]", "", str(value))[:40].lstrip(".")
    return text or fallback


def _target(generated: Any) -> dict[str, Any]:
    """A target here (no provider), keeping a generated weight and flag the server takes."""
    target: dict[str, Any] = {"model": MODEL}
    if isinstance(generated, dict):
        weight = generated.get("weight")
        if isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 < weight <= 1e6:
            target["weight"] = weight
        if isinstance(generated.get("zero_retention"), bool):
            target["zero_retention"] = generated["zero_retention"]
    return target


def _route(body: dict[str, Any], name: str | None) -> dict[str, Any]:
    targets = body.get("targets")
    if not isinstance(targets, list) or not targets:
        targets = [{}]
    out = {k: v for k, v in body.items() if k not in ("deprecated_at", "task")}
    out["targets"] = [_target(t) for t in targets[:4]]
    if name is not None:
        out["name"] = name
    return out


def _deploy(body: dict[str, Any]) -> dict[str, Any]:
    hf = body.get("hf") if isinstance(body.get("hf"), dict) else {}
    return {
        **body,
        "model_name": _slug(body.get("model_name"), "st-model"),
        "gpu": POOL,
        "num_gpus": 1,
        "hf": {"repo": "st-models/" + _slug(hf.get("repo"), "none"), "revision": None},
        "settings": {"min_instances": 0, "max_instances": 1},
    }


def _batch_lines() -> bytes:
    line = {
        "custom_id": "st-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    }
    return (json.dumps(line) + "\n").encode()


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    body = case.body
    if not isinstance(body, dict) or not OWNER:
        return case
    if _hash(case) % STEER_ONE_IN == 0:
        return case
    method, path = case.operation.method.upper(), case.operation.path
    if (method, path) == ("POST", "/v1/routes"):
        case.body = _route(body, f"{OWNER}/{_slug(body.get('name'), 'st-route')}")
    elif (method, path) == ("PUT", "/v1/routes/{name}"):
        case.body = _route({k: v for k, v in body.items() if k != "name"}, None)
    elif (method, path) == ("POST", "/deploy/llm"):
        case.body = _deploy(body)
    elif (method, path) == ("PUT", "/deploy/{deploy_id}"):
        case.body = {**body, "settings": {"min_instances": 0, "max_instances": 1}}
    elif (method, path) == ("POST", "/v1/containers"):
        case.body = {
            **body,
            "name": _slug(body.get("name"), "st-box"),
            "gpu_config": f"1x{POOL}",
            "container_image": IMAGE,
            "cloud_init_user_data": None,
        }
    elif (method, path) == ("PATCH", "/v1/containers/{container_id}"):
        case.body = {**body, "name": _slug(body.get("name"), "st-box")}
    elif method == "POST" and path.endswith("/files"):
        case.body = {**body, "purpose": "batch", "file": _batch_lines()}
    return case


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    method, path = case.operation.method.upper(), case.operation.path
    if CREATE_KEY and method == "POST" and path in CREATES and _hash(case) % 2:
        # The marker tells these from requests without credentials or with generated ones.
        keyed = {"Authorization": f"Bearer {CREATE_KEY}", MARKER: "member"}
        case.headers = {**(case.headers or {}), **keyed}
    longest = UNIQUE.get((method, path))
    body = case.body
    if longest is None or not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return
    name = f"{body['name']}-{next(SENT)}"
    if len(name) <= longest and re.fullmatch(r"[A-Za-z0-9._/-]+", body["name"]):
        case.body = {**body, "name": name}
