"""GET /openapi.json, and GET /docs: Swagger UI from the pinned `swagger-ui-py` package's
static files, served by this app (no CDN: the docs work offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from inferd.api.errors import APIError
from inferd.api.openapi import build_openapi


def _swagger_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in web frameworks).
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (requirements/runtime.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


# Only what the page loads; the package also ships Swagger Editor and source maps.
STATIC = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>inferd API</title>
<link rel="icon" type="image/png" href="{root}/docs/static/favicon-32x32.png">
<link rel="stylesheet" href="{root}/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}/docs/static/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{root}/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  showExtensions: true
}});
</script>
</body>
</html>
"""


async def openapi(request: Request) -> Response:
    app = request.app
    document = getattr(app.state, "openapi", None)
    if document is None:
        gateway = getattr(app.state, "gateway", None)
        models = [spec.name for spec in gateway.catalog] if gateway is not None else []
        document = orjson.dumps(build_openapi(app.routes, models=models))
        app.state.openapi = document
    return Response(document, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE.format(root=request.scope.get("root_path", "")))


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        raise APIError(404, "No such file.", code="not_found")
    return FileResponse(
        _swagger_dir() / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


# Not API endpoints: plain routes, left out of the document (as FastAPI does).
routes = [
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
    Route("/docs/static/{name}", static, methods=["GET"], include_in_schema=False),
]
