"""The ASGI application: wiring, lifespan (start workers, drain, stop) and error handlers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.access import AccessLogMiddleware
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.native.api_router import router as native_router
from inferd.api.openai.api_router import router as openai_router
from inferd.api.ops.api_router import router as ops_router
from inferd.auth import Authenticator, AuthError
from inferd.auth.keys import load_or_create_secret
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.limits import ConcurrencyLimiter
from inferd.runtime import Runtime
from inferd.runtime.backend import ReplicaBackend
from inferd.runtime.local import LocalBackend
from inferd.store.db import Database

log = logging.getLogger("inferd.app")


def create_app(
    settings: Settings, catalog: Catalog | None = None, backend: ReplicaBackend | None = None
) -> FastAPI:
    catalog = catalog or Catalog.load(settings.catalog)
    backend = backend or LocalBackend(settings.worker_restart_backoff_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        db.create_schema()
        secret = load_or_create_secret(settings.home, settings.master_key)
        runtime = Runtime(catalog, backend, settings.model_ready_timeout_s)
        gateway = Gateway(
            settings,
            catalog,
            runtime,
            Authenticator(db, secret, settings.auth_cache_ttl_s),
            ConcurrencyLimiter(settings.concurrency_limit),
        )
        app.state.gateway = gateway
        await runtime.start()
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained connections (timeout_graceful_shutdown)
            # before lifespan shutdown runs; refuse anything still arriving, then stop workers.
            gateway.draining = True
            await runtime.stop()
            db.close()

    app = FastAPI(title="inferd", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(openai_router)
    app.include_router(native_router)
    app.include_router(ops_router)
    app.add_middleware(AccessLogMiddleware)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> Response:
        return APIError(exc.status, str(exc), code="invalid_api_key").response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return APIError(400, f"Invalid request: `{loc}`: {first.get('msg')}.").response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        messages = {404: "No such endpoint.", 405: "Method not allowed on this endpoint."}
        return APIError(exc.status_code, messages.get(exc.status_code, str(exc.detail))).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", extra={"path": request.url.path, "error": type(exc).__name__})
        return APIError(500, "Internal error.", code="internal_error").response()

    return app
