"""Wire models of the teams API: members and roles, billing, the audit log, single sign-on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SetRole(_Body):
    role: Literal["admin", "member"]


class UpdateBilling(_Body):
    spending_limit: float | None = Field(
        ge=0, description="USD the team may spend in all; `null` removes the limit."
    )


class SetSso(_Body):
    issuer: str = Field(
        min_length=8,
        max_length=500,
        pattern=r"^https?://",
        description="The provider's `issuer` (its OpenID Provider Metadata).",
    )
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str = Field(
        min_length=1, max_length=2000, description="Write-only; stored encrypted."
    )
    admin_email: str = Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="This user becomes the team's admin on first sign-in.",
    )


# -- responses --------------------------------------------------------------------------------


class MemberObject(TypedDict):
    user_id: str
    email: str
    role: Literal["admin", "member"]
    joined_at: str
    last_login_at: str | None


class TeamObject(TypedDict):
    id: str
    team_id: str  # the Team ID: the account's name, its models' owner prefix
    role: Literal["admin", "member"]  # the caller's
    user: str | None  # the caller's email; none for the team's bootstrap key
    members: list[MemberObject]


class Billing(TypedDict):
    spending_limit: float | None
    spent: float  # USD settled (and reserved by requests in flight)


class AuditObject(TypedDict):
    at: str
    actor: str
    action: str
    target: str
    detail: str


class SsoObject(TypedDict):
    team_id: str
    issuer: str
    client_id: str
    admin_email: str
    login_url: str  # the provider-initiated login URL to register with the provider
