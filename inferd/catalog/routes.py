"""Routes: a model name served by ordered, weighted targets, each a model served here or a
model of an external OpenAI-compatible provider.

The catalog holds the routes as the control plane last published them (the database's and
the config file's); the request path reads them on every request, so they are plain frozen
data with everything precomputed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from inferd.catalog.spec import ModelSpec, Price

Policy = Literal["ordered", "weighted", "cheapest", "fastest"]
POLICIES: tuple[Policy, ...] = ("ordered", "weighted", "cheapest", "fastest")
# The tasks a route may serve: what OpenAI-compatible providers answer.
ROUTE_TASKS = ("text-generation", "embeddings")


@dataclass(frozen=True, slots=True)
class RouteTarget:
    model: str  # a model name here, or the provider's name for it
    base_url: str | None = None  # an external provider's OpenAI-compatible base (…/v1)
    api_key: str | None = field(default=None, repr=False)  # in memory only
    weight: float = 1.0
    # An external provider that keeps nothing (operator's declaration); local targets always.
    zero_retention: bool = False
    price: Price = field(default_factory=Price)  # what a request served by it is billed

    @property
    def external(self) -> bool:
        return self.base_url is not None

    @property
    def key(self) -> str:
        """Stable across gateways and edits that keep the target: names its health state."""
        if self.base_url is None:
            return "local:" + self.model
        digest = hashlib.sha256(f"{self.base_url}\0{self.model}".encode()).hexdigest()[:16]
        return "ext:" + digest

    @property
    def label(self) -> str:
        """What the `X-Inferd-Served-By` header and the usage row name: no secrets, no path."""
        if self.base_url is None:
            return self.model
        return f"{self.model}@{urlsplit(self.base_url).netloc}"

    @property
    def keeps_nothing(self) -> bool:
        return self.base_url is None or self.zero_retention


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    targets: tuple[RouteTarget, ...]
    task: str = "text-generation"
    policy: Policy = "ordered"
    zero_retention: bool = False
    account_id: str | None = None  # the owner; None: declared in the config file
    public: bool = True  # every account may use it (an operator's); else only its owner's
    source: Literal["api", "config"] = "api"
    deprecated_at: datetime | None = None  # a deprecation route (of a built-in model)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # The spec each external target is admitted as (limits, budget, price): built once.
    provider_specs: dict[str, ModelSpec] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for target in self.targets:
            if target.external:
                self.provider_specs[target.key] = ModelSpec(
                    name=self.name,
                    task=self.task,
                    engine="null",
                    price=target.price,  # type: ignore[arg-type]
                )

    def visible_to(self, account_id: str | None) -> bool:
        return self.public or (account_id is not None and account_id == self.account_id)

    @property
    def external(self) -> bool:
        return any(t.external for t in self.targets)
