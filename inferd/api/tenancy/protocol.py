"""Request bodies of the tenancy API."""

from __future__ import annotations

from typing import Annotated, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# An address's shape (local@domain), not whether it exists; nothing that could break a header.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})*$"
Email = Annotated[str, Field(max_length=254, pattern=EMAIL)]


class CreateAccount(_Body):
    name: str = Field(min_length=1, max_length=200)
    concurrency_limit: int | None = Field(default=None, ge=1, le=100_000)
    spending_limit: float | None = Field(default=None, ge=0)
    is_admin: bool = False
    gpu_quota: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="GPUs its deployments may hold (max_instances x num_gpus); the server's "
        "default when unset.",
    )
    email: Email | None = Field(
        default=None, description="Contact email for the operator's notices (deprecations)."
    )
    zero_retention: bool = Field(
        default=False,
        description="Its requests never go to an external provider not marked zero-retention.",
    )


class UpdateMe(_Body):
    email: Email | None = Field(
        description="Contact email for the operator's notices (deprecations); `null` removes it."
    )


class UpdateAccount(_Body):
    """Only the fields sent change; `null` removes a limit (the server default applies)."""

    concurrency_limit: int | None = Field(default=None, ge=1, le=100_000)
    spending_limit: float | None = Field(default=None, ge=0)
    gpu_quota: int | None = Field(default=None, ge=0, le=10_000)
    zero_retention: bool | None = Field(
        default=None,
        description="Its requests never go to an external provider not marked zero-retention.",
    )


class CreateApiToken(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\-]+$")


class CreateScopedJwt(_Body):
    api_key_name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = None
    expires_delta: int | None = Field(default=None, gt=0)
    expires_at: int | None = Field(default=None, gt=0)
    spending_limit: float | None = Field(default=None, ge=0)


# -- query parameters -------------------------------------------------------------------------


class DecodeScopedJwtQuery(_Body):
    jwtoken: str = Field(description="The scoped JWT to decode (with or without `jwt:`).")


# A date, an ISO 8601 timestamp or unix seconds (billing.ledger.parse_when reads them).
WHEN = (
    r"^([0-9]+(\.[0-9]*)?|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?)$"
)


class UsageQuery(_Body):
    from_: str | None = Field(
        default=None,
        alias="from",
        pattern=WHEN,
        description="Start: YYYY-MM-DD, ISO 8601 or unix seconds.",
    )
    to: str | None = Field(
        default=None, pattern=WHEN, description="End (inclusive date), same formats."
    )
    model: str | None = None
    key: str | None = Field(default=None, description="Only this API key's usage.")
    account: str | None = Field(default=None, description="Admins: another account's usage.")


# -- response bodies --------------------------------------------------------------------------


class CreatedAccount(TypedDict):
    id: str
    name: str
    api_key: str  # shown once
    api_key_name: str


class Account(TypedDict):
    id: str
    name: str
    is_admin: bool
    concurrency_limit: int | None
    spending_limit: float | None
    gpu_quota: int | None
    email: str | None
    zero_retention: bool


class Me(TypedDict):
    id: str
    name: str
    email: str | None


class ApiToken(TypedDict):
    name: str
    prefix: str
    created_at: str  # ISO 8601
    alias_of: NotRequired[str | None]  # set on an alias (`auto`): the key it stands for


class CreatedApiToken(TypedDict):
    name: str
    token: str  # shown once


class DeletedApiToken(TypedDict):
    deleted: str


class ScopedJwt(TypedDict):
    token: str


class ScopedJwtClaims(TypedDict):
    expires_at: int | None
    models: list[str] | None
    spending_limit: float | None
    api_key_name: str


class UsageRow(TypedDict):
    date: str  # YYYY-MM-DD
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    uptime_seconds: float  # deployments' instance-seconds, containers' running seconds


class UsageSummary(TypedDict):
    account_id: str
    usage: list[UsageRow]
    total_cost: float
    total_requests: int
