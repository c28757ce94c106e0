"""Routes of the tenancy API."""

from __future__ import annotations

from starlette.routing import Route

from inferd.api.tenancy import serving

routes = [
    Route("/v1/accounts", serving.create_account, methods=["POST"]),
    Route("/v1/accounts", serving.list_accounts, methods=["GET"]),
    Route("/v1/api-tokens", serving.list_api_tokens, methods=["GET"]),
    Route("/v1/api-tokens", serving.create_api_token, methods=["POST"]),
    Route("/v1/api-tokens/{name}", serving.delete_api_token, methods=["DELETE"]),
    Route("/v1/scoped-jwt", serving.create_scoped_jwt, methods=["POST"]),
    Route("/v1/scoped-jwt", serving.decode_scoped_jwt, methods=["GET"]),
    Route("/v1/usage", serving.usage, methods=["GET"]),
]
