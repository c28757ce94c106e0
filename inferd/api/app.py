"""The ASGI application: wiring, lifespan (start workers, drain, stop) and error handlers."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.batches.api_router import routes as batch_routes
from inferd.api.batches.lines import BatchLines
from inferd.api.containers.api_router import routes as container_routes
from inferd.api.dash.routes import routes as dash_routes
from inferd.api.deploy.api_router import routes as deploy_routes
from inferd.api.dispatch import Dispatcher, render_exception
from inferd.api.docs.api_router import routes as docs_routes
from inferd.api.files.api_router import routes as file_routes
from inferd.api.gateway import Gateway
from inferd.api.native.api_router import routes as native_routes
from inferd.api.native.serving import infer
from inferd.api.openai.api_router import routes as openai_routes
from inferd.api.ops.api_router import routes as ops_routes
from inferd.api.routing.api_router import routes as route_routes
from inferd.api.sso.routes import routes as sso_routes
from inferd.api.teams.api_router import routes as team_routes
from inferd.api.tenancy.api_router import routes as tenancy_routes
from inferd.api.webhooks import inference as webhook_inference
from inferd.api.webhooks.api_router import routes as webhook_routes
from inferd.auth import Authenticator, AuthError
from inferd.auth.keys import KeyVault, load_or_create_secret
from inferd.auth.revocations import Revocations
from inferd.billing.budget import Budget, InProcessBudget, RedisBudget
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control import builtins
from inferd.control.deprecation import DeprecationNotifier
from inferd.control.plane import ControlPlane
from inferd.jobs import JobQueue, JobRunner
from inferd.jobs.batch.service import Batches
from inferd.jobs.files import FileStore
from inferd.jobs.webhooks.delivery import DeliveryPolicy, RetryPolicy
from inferd.jobs.webhooks.outbox import Webhooks
from inferd.jobs.webhooks.secrets import WebhookSecrets
from inferd.limits import ConcurrencyLimiter, InProcessLimiter
from inferd.limits.redis_concurrency import RedisLimiter
from inferd.netguard import Resolver, parse_allow_hosts
from inferd.runtime import Runtime
from inferd.runtime.backend import ReplicaBackend
from inferd.runtime.local import WORKER_ENV, LocalBackend
from inferd.serving import RequestError, Serving
from inferd.serving.route_health import RouteHealth
from inferd.store.blobs import BlobStore, load_master_key
from inferd.store.db import Database


def _backend(settings: Settings) -> ReplicaBackend:
    env = {"INFERD_MODEL_CACHE": str(settings.model_cache)}
    if settings.backend == "ray":
        from inferd.runtime.ray_backend import RayBackend  # Ray is an optional dependency

        if not settings.ray_address:
            raise ValueError("backend `ray` needs ray_address (HOST:PORT of the Ray cluster)")
        if importlib.util.find_spec("ray") is None:
            raise ValueError("backend `ray` needs Ray Serve: pip install -r requirements/ray.txt")
        return RayBackend(
            settings.ray_address,
            namespace=settings.ray_namespace,
            cpus_per_replica=settings.ray_cpus_per_replica,
            health_check_period_s=settings.ray_health_check_period_s,
            health_check_timeout_s=settings.ray_health_check_timeout_s,
            look_back_s=settings.ray_autoscale_look_back_s,
            env={**WORKER_ENV, **env},
        )
    return LocalBackend(settings.worker_restart_backoff_s, env)


def create_app(
    settings: Settings, catalog: Catalog | None = None, backend: ReplicaBackend | None = None
) -> Dispatcher:
    """`catalog`: the models to seed instead of the settings' catalog file (read now, so a
    bad file stops the start before anything listens)."""
    seed = (catalog or Catalog.load(settings.catalog)) if settings.seed_catalog else None
    backend = backend or _backend(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        await asyncio.to_thread(db.migrate)
        served = await asyncio.to_thread(builtins.catalog_from, db, seed)
        vault = KeyVault(load_or_create_secret(settings.home, settings.master_key))
        auth = Authenticator(db, vault, settings.auth_cache_ttl_s)
        ledger = UsageLedger(db, settings.ledger_flush_interval_s)
        redis = None
        if settings.redis_url:
            # Blocking pool: a burst waits for a connection instead of failing. A pooled
            # connection Redis closed (a restart) is retried on a fresh one, so requests after
            # Redis is back never fail on a stale socket.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=512,
                timeout=10,
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
            redis = aioredis.Redis(connection_pool=pool)
        if redis is not None:
            limiter: ConcurrencyLimiter = RedisLimiter(
                redis, settings.concurrency_limit, settings.redis_prefix, settings.lease_ttl_s
            )
            budget: Budget = RedisBudget(redis, ledger.total, settings.redis_prefix)
        else:
            limiter = InProcessLimiter(settings.concurrency_limit)
            budget = InProcessBudget(ledger.total)
        revocations = Revocations(auth, redis, settings.redis_prefix)
        runtime = Runtime(served, backend, settings.model_ready_timeout_s)
        health = RouteHealth(
            served,
            settings.route_failure_threshold,
            settings.route_cooldown_s,
            settings.route_first_byte_timeout_s,
            redis,
            settings.redis_prefix,
        )
        serving = Serving(settings, served, runtime, limiter, budget, ledger, health)
        control = ControlPlane(settings, db, vault, runtime, served, ledger, budget)
        queue = JobQueue(db)
        jobs = JobRunner(queue)
        blobs = BlobStore(
            settings.blob_dir or settings.home / "blobs",
            load_master_key(
                _secret(settings.blob_master_key), settings.blob_master_key_file, settings.home
            ),
        )
        files = FileStore(db, blobs, queue)
        webhooks = Webhooks(
            db,
            vault,
            blobs,
            queue,
            jobs,
            policy=DeliveryPolicy(
                parse_allow_hosts(settings.webhooks_allow_hosts),
                settings.webhooks_timeout_s,
                resolver=Resolver.from_setting(settings.dns_nameservers),
            ),
            retry=RetryPolicy.parse(settings.webhooks_retry_schedule),
            secrets_=WebhookSecrets(db, vault, settings.webhooks_rotation_window_s),
            queue_limit=settings.webhooks_queue_limit,
            resend_window_s=settings.webhooks_resend_window_s,
        )
        batches = Batches(
            db,
            blobs,
            files,
            queue,
            jobs,
            completion_window_s=settings.batch_completion_window_s,
            discount=settings.batch_discount,
            concurrency=settings.batch_concurrency,
            budget_retry_s=settings.batch_budget_retry_s,
        )
        gateway = Gateway(settings, serving, auth, control, webhooks, files=files, batches=batches)
        lines = BatchLines(gateway)
        batches.serve(lines.run, lines.check_body, lines.check_model)
        webhooks.serve(functools.partial(webhook_inference.execute, gateway, infer))
        app.state.gateway = gateway
        app.state.revocations = revocations
        await limiter.start()
        await ledger.start()
        await revocations.start()
        await backend.start()
        await runtime.start()
        await control.start()
        await health.start()
        await asyncio.to_thread(webhooks.recover)
        await asyncio.to_thread(blobs.sweep_partial)
        files.serve(jobs)
        await jobs.start()
        notifier = DeprecationNotifier(settings, db, served)
        await notifier.start()
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained connections (timeout_graceful_shutdown)
            # before lifespan shutdown runs; refuse anything still arriving, then stop workers.
            serving.draining = True
            await notifier.close()
            await health.close()
            await serving.upstream.aclose()
            await jobs.close()
            await webhooks.close()
            await control.close()
            await runtime.stop()
            await backend.close()
            await gateway.media.aclose()
            await revocations.close()
            await ledger.close()
            await limiter.close()
            if redis is not None:
                await redis.aclose()
            db.close()

    async def handle(request: Request, exc: Exception) -> Response:
        return render_exception(exc, request.url.path)

    starlette = Starlette(
        routes=[
            *openai_routes,
            *native_routes,
            *tenancy_routes,
            *team_routes,
            *deploy_routes,
            *container_routes,
            *route_routes,
            *webhook_routes,
            *file_routes,
            *batch_routes,
            *ops_routes,
            *docs_routes,
            *sso_routes,
            *dash_routes,
        ],
        lifespan=lifespan,
        exception_handlers={
            RequestError: handle,
            AuthError: handle,
            HTTPException: handle,
            Exception: handle,
        },
    )
    return Dispatcher(starlette)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
