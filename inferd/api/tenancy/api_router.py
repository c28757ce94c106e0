"""Routes of the tenancy API."""

from __future__ import annotations

from inferd.api.endpoint import JSON, Endpoint, Link, Reply, links
from inferd.api.tenancy import serving
from inferd.api.tenancy.protocol import (
    Account,
    ApiToken,
    CreateAccount,
    CreateApiToken,
    CreatedAccount,
    CreatedApiToken,
    CreateScopedJwt,
    DecodeScopedJwtQuery,
    DeletedApiToken,
    Me,
    ScopedJwt,
    ScopedJwtClaims,
    UpdateAccount,
    UpdateMe,
    UsageQuery,
    UsageSummary,
)

ACCOUNT = links(
    {"name": "$response.body#/name"},
    "PATCH /v1/accounts/{name}",
    "GET /v1/accounts/{name}/sso",
    "PUT /v1/accounts/{name}/sso",
)
# A key's walk: create → mint a scoped JWT with it → revoke it → mint again (refused).
KEY = (
    Link("POST", "/v1/scoped-jwt", body={"api_key_name": "$response.body#/name"}),
    *links({"name": "$response.body#/name"}, "DELETE /v1/api-tokens/{name}"),
)
REVOKED = (Link("POST", "/v1/scoped-jwt", body={"api_key_name": "$response.body#/deleted"}),)
JWT = links({"jwtoken": "$response.body#/token"}, "GET /v1/scoped-jwt")

routes = [
    Endpoint(
        "/v1/accounts",
        serving.create_account,
        "POST",
        summary="Create an account (admin)",
        description="Returns the account and its first API key (`auto`), shown once.",
        body={JSON: CreateAccount},
        responses={200: Reply("The account and its first key.", {JSON: CreatedAccount})},
        links=ACCOUNT,
        errors=(403, 409),
    ),
    Endpoint(
        "/v1/accounts",
        serving.list_accounts,
        "GET",
        summary="List accounts (admin)",
        responses={200: Reply("Every account.", {JSON: list[Account]})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/accounts/{name}",
        serving.update_account,
        "PATCH",
        params={"name": "The account's name."},
        summary="Change an account's limits (admin)",
        description="Concurrency, spending limit and GPU quota; fields not sent keep their "
        "value, `null` removes the limit. Gateways apply it within `auth_cache_ttl_s`.",
        body={JSON: UpdateAccount},
        responses={200: Reply("The account.", {JSON: Account})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/me",
        serving.update_me,
        "PUT",
        summary="Set this account's contact email",
        description="Where the operator's notices go, such as a model's deprecation date; "
        "`null` removes it. Needs an API key, not a scoped JWT.",
        body={JSON: UpdateMe},
        responses={200: Reply("The account.", {JSON: Me})},
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/api-tokens",
        serving.list_api_tokens,
        "GET",
        summary="List this account's API keys",
        description="Names and prefixes only. Needs an API key, not a scoped JWT.",
        responses={200: Reply("The keys, oldest first.", {JSON: list[ApiToken]})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/api-tokens",
        serving.create_api_token,
        "POST",
        summary="Create an API key",
        body={JSON: CreateApiToken},
        responses={200: Reply("The key, shown once.", {JSON: CreatedApiToken})},
        links=KEY,
        errors=(403, 409),
    ),
    Endpoint(
        "/v1/api-tokens/{name}",
        serving.delete_api_token,
        "DELETE",
        summary="Revoke an API key",
        description="Revocation is immediate, on every gateway.",
        params={"name": "The key's name."},
        responses={200: Reply("Deleted.", {JSON: DeletedApiToken})},
        links=REVOKED,
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/scoped-jwt",
        serving.create_scoped_jwt,
        "POST",
        summary="Mint a scoped JWT",
        description="Signed with one of your API keys; restricted to `models`, an expiry and "
        "a spending limit.",
        body={JSON: CreateScopedJwt},
        responses={200: Reply("The token (`jwt:...`).", {JSON: ScopedJwt})},
        links=JWT,
        errors=(403, 404),
    ),
    Endpoint(
        "/v1/scoped-jwt",
        serving.decode_scoped_jwt,
        "GET",
        summary="Decode a scoped JWT signed by your account",
        query=DecodeScopedJwtQuery,
        responses={200: Reply("The token's restrictions.", {JSON: ScopedJwtClaims})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/usage",
        serving.usage,
        "GET",
        summary="Usage and cost by day and model",
        query=UsageQuery,
        responses={200: Reply("The usage rows and totals.", {JSON: UsageSummary})},
        errors=(403,),
    ),
]
