"""Routes as the database and the config file hold them: who may create what, and the
snapshot every gateway's catalog serves.

Rules (docs/routing.md):
- A route with an external target, a public name (outside the caller's owner prefix) or a
  deprecation date is the operator's: an admin key of an admin account. Operator routes are
  public: every account may use them. Their base URLs are trusted operator configuration, not
  user input, so they bypass the user-URL SSRF guard.
- An account may route only under its own owner prefix (`owner/...`), to models it can use;
  such a route is private to the account.
- A route never shadows a name that exists (a built-in model, a deployment, another route);
  a deprecation route is the one exception: it names a built-in model and, from its date,
  serves it with its one target (a built-in model of the same task).
- A provider's API key is write-only: encrypted at rest with the key vault, never returned.
  Replacing a route keeps the key of a target whose base URL and model stay the same.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select

from inferd.auth import Principal
from inferd.auth.keys import KeyVault
from inferd.catalog import Catalog, Price, Route, RouteTarget
from inferd.catalog.routes import POLICIES, ROUTE_TASKS
from inferd.config import RouteConfig
from inferd.store.db import Database
from inferd.store.models import Account, Deployment, utcnow
from inferd.store.route_tables import RouteRow

log = logging.getLogger("inferd.control")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,299}$")
MAX_TARGETS = 16


class RouteError(Exception):
    """A request the route registry refuses: `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass(frozen=True)
class TargetDraft:
    model: str
    base_url: str | None = None
    api_key: str | None = None  # None on a replace: keep the stored key of the same target
    weight: float = 1.0
    zero_retention: bool = False
    price: Price = field(default_factory=Price)


@dataclass(frozen=True)
class RouteDraft:
    name: str
    targets: list[TargetDraft]
    policy: str = "ordered"
    task: str | None = None  # derived from local targets; external-only: text-generation
    zero_retention: bool = False
    deprecated_at: datetime | None = None


def is_operator(principal: Principal) -> bool:
    return principal.is_admin and principal.role == "admin" and principal.jwt is None


class RouteRegistry:
    def __init__(
        self, db: Database, vault: KeyVault, catalog: Catalog, declared: list[RouteConfig]
    ) -> None:
        self.db = db
        self.vault = vault
        self.catalog = catalog
        self.declared = declared

    # -- reads ----------------------------------------------------------------------------------

    def load(self) -> list[Route]:
        """Every route, keys decrypted, for the catalog: the database's, then the config file's
        (a config route whose name the database also holds is skipped, with a log line)."""
        with self.db.session() as s:
            rows = list(s.scalars(select(RouteRow)))
        routes = [self._route(row) for row in rows]
        taken = {r.name for r in routes}
        for config in self.declared:
            if config.name in taken:
                log.error("config route shadowed by a stored one", extra={"model": config.name})
                continue
            routes.append(config_route(config))
        return routes

    def visible(self, principal: Principal) -> list[Route]:
        """Routes the caller may use or manage, deprecations included, by name."""
        routes = [r for r in self.catalog.routes() if r.visible_to(principal.account_id)]
        return sorted(routes, key=lambda r: r.name)

    def get(self, principal: Principal, name: str) -> Route:
        route = next((r for r in self.catalog.routes() if r.name == name), None)
        if route is None or not route.visible_to(principal.account_id):
            raise RouteError(404, f"No route named `{name}`.", "not_found", "name")
        return route

    # -- writes ---------------------------------------------------------------------------------

    def create(self, principal: Principal, draft: RouteDraft) -> Route:
        with self.db.session() as s, s.begin():
            if s.get(RouteRow, draft.name) is not None or self._declared(draft.name):
                raise RouteError(
                    409, f"A route named `{draft.name}` exists.", "route_exists", "name"
                )
            public, task = self._check(s, principal, draft)
            self._check_free(s, draft)
            row = RouteRow(
                name=draft.name,
                account_id=principal.account_id,
                public=public,
                created_at=utcnow(),
            )
            self._fill(row, draft, task, {})
            s.add(row)
            s.flush()
            return self._route(row)

    def replace(self, principal: Principal, name: str, draft: RouteDraft) -> Route:
        if draft.name != name:
            raise RouteError(400, "A route's name cannot change.", "invalid_parameter", "name")
        with self.db.session() as s, s.begin():
            row = self._own(s, principal, name)
            public, task = self._check(s, principal, draft)
            kept = {(t["base_url"], t["model"]): t.get("api_key_encrypted") for t in _targets(row)}
            row.public = public
            self._fill(row, draft, task, kept)
            s.flush()
            return self._route(row)

    def delete(self, principal: Principal, name: str) -> Route:
        with self.db.session() as s, s.begin():
            row = self._own(s, principal, name)
            route = self._route(row)
            s.delete(row)
            return route

    # -- checks ---------------------------------------------------------------------------------

    def _own(self, s: Any, principal: Principal, name: str) -> RouteRow:
        """The stored route the caller may change: 404 when they may not even see it."""
        if self._declared(name):
            raise RouteError(
                409,
                f"The route `{name}` is declared in the server's config file; change it there.",
                "route_in_config",
                "name",
            )
        row = s.get(RouteRow, name)
        if row is None or not (row.public or row.account_id == principal.account_id):
            raise RouteError(404, f"No route named `{name}`.", "not_found", "name")
        if row.account_id != principal.account_id and not is_operator(principal):
            raise RouteError(403, "Only the operator may change this route.", "forbidden")
        return row

    def _check(self, s: Any, principal: Principal, draft: RouteDraft) -> tuple[bool, str]:
        """(public, task) of a valid draft the caller may make; RouteError otherwise."""
        if not NAME.match(draft.name) or "//" in draft.name or draft.name.endswith("/"):
            raise RouteError(
                400,
                "A route name is letters, digits, `.`, `_`, `-` and `/` (at most 300).",
                "invalid_parameter",
                "name",
            )
        if draft.name.endswith("/health"):
            raise RouteError(
                400, "A route name cannot end in `/health`.", "invalid_parameter", "name"
            )
        if draft.policy not in POLICIES:
            raise RouteError(400, f"`policy` is one of {', '.join(POLICIES)}.", "invalid_parameter")
        if not 1 <= len(draft.targets) <= MAX_TARGETS:
            raise RouteError(
                400, f"A route has 1 to {MAX_TARGETS} targets.", "invalid_parameter", "targets"
            )
        operator = is_operator(principal)
        account = s.get(Account, principal.account_id)
        owner = account.name if account is not None else ""
        own_name = draft.name.startswith(owner + "/") and len(draft.name) > len(owner) + 1
        external = any(t.base_url is not None for t in draft.targets)
        if not operator and (external or not own_name or draft.deprecated_at is not None):
            why = (
                "external targets"
                if external
                else "a deprecation date"
                if draft.deprecated_at is not None
                else f"a public name (yours start with `{owner}/`)"
            )
            raise RouteError(
                403, f"A route with {why} is the operator's to make.", "forbidden", "name"
            )
        tasks = set()
        for i, target in enumerate(draft.targets):
            where = f"targets[{i}]"
            if target.base_url is not None:
                check_base_url(target.base_url, where)
                continue
            spec = self.catalog.find(target.model, principal.account_id)
            if spec is None:
                raise RouteError(
                    400,
                    f"{where}: the model `{target.model}` is not served here (give `base_url` "
                    "for a model at another provider).",
                    "invalid_target",
                    "targets",
                )
            tasks.add(spec.task)
        if len(tasks) > 1:
            raise RouteError(
                400, "A route's models here must serve one task.", "invalid_target", "targets"
            )
        task = tasks.pop() if tasks else (draft.task or "text-generation")
        if draft.task is not None and draft.task != task:
            raise RouteError(
                400, f"The route's targets serve {task}, not {draft.task}.", "invalid_target"
            )
        if task not in ROUTE_TASKS:
            raise RouteError(
                400,
                f"Routes serve {' and '.join(ROUTE_TASKS)} (OpenAI-compatible endpoints); "
                f"this target serves {task}.",
                "invalid_target",
                "targets",
            )
        if draft.deprecated_at is not None:
            self._check_deprecation(draft)
        return operator, task

    def _check_deprecation(self, draft: RouteDraft) -> None:
        builtin = {spec.name: spec for spec in self.catalog.declared()}
        spec = builtin.get(draft.name)
        if spec is None:
            raise RouteError(
                400,
                f"A deprecation route names a built-in model; `{draft.name}` is not one.",
                "invalid_parameter",
                "name",
            )
        target = draft.targets[0]
        replacement = builtin.get(target.model)
        if len(draft.targets) != 1 or target.base_url is not None or replacement is None:
            raise RouteError(
                400,
                "A deprecation route has one target: the built-in model that replaces it.",
                "invalid_target",
                "targets",
            )
        if replacement.deprecated_at is not None or replacement.name == spec.name:
            raise RouteError(
                400, "The replacement must be another model, not deprecated.", "invalid_target"
            )

    def _check_free(self, s: Any, draft: RouteDraft) -> None:
        """A route never shadows a built-in model or any account's deployment."""
        if draft.deprecated_at is not None:
            return  # names its built-in model on purpose
        taken = draft.name in {spec.name for spec in self.catalog.declared()} or (
            s.scalar(select(Deployment.id).where(Deployment.full_name == draft.name)) is not None
        )
        if taken:
            raise RouteError(
                409,
                f"`{draft.name}` is already a model here; a route cannot shadow it.",
                "name_taken",
                "name",
            )

    def _declared(self, name: str) -> bool:
        return any(c.name == name for c in self.declared)

    # -- rows -----------------------------------------------------------------------------------

    def _fill(
        self, row: RouteRow, draft: RouteDraft, task: str, kept: dict[tuple, str | None]
    ) -> None:
        targets = []
        for t in draft.targets:
            if t.api_key is not None:
                encrypted = self.vault.encrypt(t.api_key) if t.api_key else None
            else:
                encrypted = kept.get((t.base_url, t.model))
            targets.append(
                {
                    "model": t.model,
                    "base_url": t.base_url,
                    "api_key_encrypted": encrypted,
                    "weight": t.weight,
                    "zero_retention": t.zero_retention,
                    "price": t.price.model_dump(),
                }
            )
        row.targets = orjson.dumps(targets).decode()
        row.task = task
        row.policy = draft.policy
        row.zero_retention = draft.zero_retention
        row.deprecated_at = draft.deprecated_at
        row.updated_at = utcnow()

    def _route(self, row: RouteRow) -> Route:
        targets = []
        for t in _targets(row):
            encrypted = t.get("api_key_encrypted")
            targets.append(
                RouteTarget(
                    model=t["model"],
                    base_url=t["base_url"],
                    api_key=self.vault.decrypt(encrypted) if encrypted else None,
                    weight=float(t.get("weight", 1.0)),
                    zero_retention=bool(t.get("zero_retention", False)),
                    price=Price.model_validate(t.get("price") or {}),
                )
            )
        return Route(
            name=row.name,
            targets=tuple(targets),
            task=row.task,
            policy=row.policy,  # type: ignore[arg-type]
            zero_retention=row.zero_retention,
            account_id=row.account_id,
            public=row.public,
            deprecated_at=_utc(row.deprecated_at),
            created_at=_utc(row.created_at),
            updated_at=_utc(row.updated_at),
        )


def config_route(config: RouteConfig) -> Route:
    targets = []
    for t in config.targets:
        key = t.api_key.get_secret_value() if t.api_key else None
        if t.api_key_env:
            key = os.environ.get(t.api_key_env) or key
        targets.append(
            RouteTarget(
                model=t.model,
                base_url=t.base_url,
                api_key=key,
                weight=t.weight,
                zero_retention=t.zero_retention,
                price=Price(input_per_1m=t.input_per_1m, output_per_1m=t.output_per_1m),
            )
        )
    return Route(
        name=config.name,
        targets=tuple(targets),
        task=config.task,
        policy=config.policy,
        zero_retention=config.zero_retention,
        source="config",
    )


def check_base_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteError(
            400,
            f"{where}: `base_url` must be an http(s) URL of an OpenAI-compatible API (…/v1).",
            "invalid_target",
            "targets",
        )
    if parts.query or parts.fragment or parts.username:
        raise RouteError(
            400,
            f"{where}: `base_url` takes no query, fragment or credentials (use `api_key`).",
            "invalid_target",
            "targets",
        )


def _targets(row: RouteRow) -> list[dict[str, Any]]:
    return orjson.loads(row.targets)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
