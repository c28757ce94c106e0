"""The dashboard's routes (`/dash...`): server-rendered pages and their forms, and the two
static files they load. Not part of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from inferd.api.dash import deployments, instances, keys, playground, team, usage, webhooks

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"dash.css": "text/css", "dash.js": "text/javascript"}


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC_TYPES:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC / name, media_type=STATIC_TYPES[name], headers={"Cache-Control": "max-age=300"}
    )


def _page(path: str, endpoint, methods: tuple[str, ...] = ("GET",)) -> Route:
    return Route(path, endpoint, methods=list(methods), include_in_schema=False)


routes = [
    _page("/dash/static/{name}", static),
    _page("/dash", usage.overview),
    _page("/dash/usage", usage.usage),
    _page("/dash/api_keys", keys.api_keys),
    _page("/dash/api_keys", keys.create_key, ("POST",)),
    _page("/dash/api_keys/{name}/revoke", keys.revoke_key, ("POST",)),
    _page("/dash/scoped_jwt", keys.create_jwt, ("POST",)),
    _page("/dash/team", team.team),
    _page("/dash/team/{user_id}/role", team.set_role, ("POST",)),
    _page("/dash/team/{user_id}/remove", team.remove_member, ("POST",)),
    _page("/dash/billing", team.billing),
    _page("/dash/billing", team.set_limit, ("POST",)),
    _page("/dash/account", team.account),
    _page("/dash/deployments", deployments.deployments),
    _page("/dash/deployments/table", deployments.table),
    _page("/dash/deployments/llm", deployments.create_llm, ("POST",)),
    _page("/dash/deployments/lora", deployments.create_lora, ("POST",)),
    _page("/dash/deployments/{deploy_id}/scale", deployments.scale, ("POST",)),
    _page("/dash/deployments/{deploy_id}/stop", deployments.stop, ("POST",)),
    _page("/dash/deployments/{deploy_id}/start", deployments.start, ("POST",)),
    _page("/dash/deployments/{deploy_id}/delete", deployments.delete, ("POST",)),
    _page("/dash/instances", instances.instances),
    _page("/dash/instances", instances.create, ("POST",)),
    _page("/dash/instances/table", instances.table),
    _page("/dash/instances/{container_id}/terminate", instances.terminate, ("POST",)),
    _page("/dash/webhooks", webhooks.webhooks_page),
    _page("/dash/webhooks/table", webhooks.table),
    _page("/dash/webhooks/secret", webhooks.show_secret, ("POST",)),
    _page("/dash/webhooks/secret/rotate", webhooks.rotate_secret, ("POST",)),
    _page("/dash/webhooks/deliveries/{delivery_id}/resend", webhooks.resend, ("POST",)),
    _page("/dash/playground", playground.playground),
    _page("/dash/playground/chat", playground.chat, ("POST",)),
]
