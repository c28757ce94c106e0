"""Routes of the routes API. Route names contain `/`: `/health` is matched first, then the
longest path is the name."""

from __future__ import annotations

from inferd.api.endpoint import JSON, Endpoint, Reply
from inferd.api.routing import serving
from inferd.api.routing.protocol import RouteHealth, RouteIn, RouteList, RouteObject, RouteReplace

NAME = {"name": "The route's name (it may contain `/`)."}
OBJECT = {JSON: RouteObject}

routes = [
    Endpoint(
        "/v1/routes",
        serving.create_route,
        "POST",
        summary="Create a route",
        description="A model name served by ordered, weighted targets: models served here or "
        "models of external OpenAI-compatible providers, with fallback and cooldowns.",
        body={JSON: RouteIn},
        responses={201: Reply("The route (API keys are never returned).", OBJECT)},
        errors=(403, 409, 503),
    ),
    Endpoint(
        "/v1/routes",
        serving.list_routes,
        "GET",
        summary="List the routes you may use",
        responses={200: Reply("Yours and the operator's, by name.", {JSON: RouteList})},
        errors=(403, 503),
    ),
    Endpoint(
        "/v1/routes/{name:path}/health",
        serving.route_health,
        "GET",
        params=NAME,
        summary="A route's targets: state, cooldown, failures, p50 latency",
        responses={200: Reply("Every target, as this gateway sees it now.", {JSON: RouteHealth})},
        errors=(403, 404, 503),
    ),
    Endpoint(
        "/v1/routes/{name:path}",
        serving.get_route,
        "GET",
        params=NAME,
        summary="A route",
        responses={200: Reply("The route.", OBJECT)},
        errors=(403, 404, 503),
    ),
    Endpoint(
        "/v1/routes/{name:path}",
        serving.replace_route,
        "PUT",
        params=NAME,
        summary="Replace a route's targets and policy",
        body={JSON: RouteReplace},
        responses={200: Reply("The route as it is now.", OBJECT)},
        errors=(403, 404, 409, 503),
    ),
    Endpoint(
        "/v1/routes/{name:path}",
        serving.delete_route,
        "DELETE",
        params=NAME,
        summary="Delete a route",
        responses={200: Reply("The route, now gone.", OBJECT)},
        errors=(403, 404, 409, 503),
    ),
]
