"""GET /v1/blobs/{name}: a generated image, until its TTL runs out (then 404)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from inferd.api.errors import APIError
from inferd.store.blobs import TYPES


async def get_blob(request: Request) -> Response:
    # No API key: the 256-bit name is the capability, as with a signed URL.
    name = request.path_params["name"]
    path = request.app.state.gateway.blobs.path(name)
    if path is None:
        raise APIError(404, "No such file, or it has expired.", code="not_found")
    return FileResponse(
        path,
        media_type=TYPES.get(path.suffix.lstrip("."), "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=300"},
    )


routes = [Route("/v1/blobs/{name}", get_blob, methods=["GET"])]
