"""Response bodies of the health and readiness probes."""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: Literal["ready", "not_ready"]
    draining: bool
    models: dict[str, bool]  # model name → its replicas are up
