"""Routes of the teams API: the caller's team and its members' roles, billing (team admins),
the audit log, and single sign-on settings (server admins)."""

from __future__ import annotations

from inferd.api.endpoint import JSON, Endpoint, Reply
from inferd.api.teams import serving
from inferd.api.teams.protocol import (
    AuditObject,
    Billing,
    MemberObject,
    SetRole,
    SetSso,
    SsoObject,
    TeamObject,
    UpdateBilling,
)

routes = [
    Endpoint(
        "/v1/team",
        serving.get_team,
        "GET",
        summary="Your team and its members",
        responses={200: Reply("The team, the caller's role and every member.", {JSON: TeamObject})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/team/members/{user_id}",
        serving.set_member_role,
        "PATCH",
        params={"user_id": "The member's user id (`usr_...`)."},
        summary="Change a member's role (team admins)",
        description="The team keeps at least one admin (409 otherwise). Keys the member "
        "created act with the new role.",
        body={JSON: SetRole},
        responses={200: Reply("The member.", {JSON: MemberObject})},
        errors=(403, 404, 409),
    ),
    Endpoint(
        "/v1/team/members/{user_id}",
        serving.remove_member,
        "DELETE",
        params={"user_id": "The member's user id (`usr_...`)."},
        summary="Remove a member from the team (team admins)",
        description="Their API keys stop working and their dashboard sessions end. They can "
        "sign in again through the team's identity provider unless it stops them.",
        responses={200: Reply("The member, as they were.", {JSON: MemberObject})},
        errors=(403, 404, 409),
    ),
    Endpoint(
        "/v1/team/audit",
        serving.audit_log,
        "GET",
        summary="The team's audit log (team admins)",
        responses={200: Reply("The latest 100 admin actions.", {JSON: list[AuditObject]})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/billing",
        serving.get_billing,
        "GET",
        summary="The team's spending limit and spending (team admins)",
        responses={200: Reply("Limit and spending in USD.", {JSON: Billing})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/billing",
        serving.update_billing,
        "PUT",
        summary="Set the team's spending limit (team admins)",
        body={JSON: UpdateBilling},
        responses={200: Reply("Limit and spending in USD.", {JSON: Billing})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/accounts/{name}/sso",
        serving.set_sso,
        "PUT",
        params={"name": "The team's name (its Team ID)."},
        summary="Register a team's OpenID Connect provider (server admins)",
        description="Issuer, client id and secret of the team's app at the provider (Okta or "
        "any other) and the email that becomes the team's admin on first sign-in. The secret "
        "is stored encrypted and never returned.",
        body={JSON: SetSso},
        responses={200: Reply("The settings, without the secret.", {JSON: SsoObject})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/accounts/{name}/sso",
        serving.get_sso,
        "GET",
        params={"name": "The team's name (its Team ID)."},
        summary="A team's single sign-on settings (server admins)",
        responses={200: Reply("The settings, without the secret.", {JSON: SsoObject})},
        errors=(403, 404),
    ),
]
