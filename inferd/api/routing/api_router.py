"""Routes of the routes API. Route names contain `/`: `/health` is matched first, then the
longest path is the name."""

from __future__ import annotations

from inferd.api.endpoint import JSON, Endpoint, Reply, links
from inferd.api.routing import serving
from inferd.api.routing.protocol import RouteHealth, RouteIn, RouteList, RouteObject, RouteReplace

NAME = {"name": "The route's name (it may contain `/`)."}
OBJECT = {JSON: RouteObject}
ITEM = "/v1/routes/{name}"
# A route's walk, by name: create → get, health → replace → delete → get (gone).
NAMED = {"name": "$response.body#/name"}
CREATED = links(NAMED, f"GET {ITEM}", f"GET {ITEM}/health", f"PUT {ITEM}", f"DELETE {ITEM}")
READ = links(NAMED, f"GET {ITEM}/health", f"PUT {ITEM}", f"DELETE {ITEM}")
REPLACED = links(NAMED, f"GET {ITEM}", f"DELETE {ITEM}")
DELETED = links(NAMED, f"GET {ITEM}", f"PUT {ITEM}")

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
        links=CREATED,
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
        links=READ,
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
        links=REPLACED,
        errors=(403, 404, 409, 503),
    ),
    Endpoint(
        "/v1/routes/{name:path}",
        serving.delete_route,
        "DELETE",
        params=NAME,
        summary="Delete a route",
        responses={200: Reply("The route, now gone.", OBJECT)},
        links=DELETED,
        errors=(403, 404, 409, 503),
    ),
]
