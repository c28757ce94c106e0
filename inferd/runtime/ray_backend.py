"""Replicas on a Ray cluster with Ray Serve: the gateway side of the Ray backend.

Each served version is one Serve application named by its deploy_id (a built-in model:
`builtin-<name>`), holding one deployment, `model`, whose replicas are `ModelReplica` actors.
Applications are pushed one at a time with `serve.run(app, name=...)` (never the declarative
all-applications PUT, which deletes what it does not list), so every gateway connected to the
cluster adds and removes only its own. Every gateway calls the same replicas through
deployment handles, streaming (`handle.options(stream=True)`); Ray's HTTP proxy never starts.

Instances are shared, so only the control plane's leader changes a running application; any
gateway may create one that is missing (identical pushes are no-ops for Serve: the code version
is a fingerprint of the spec and placement, not Serve's random default). Serve's autoscaler
sizes them, from an `AutoscalingConfig` with every field set (defaults moved between
releases). What Serve reports (application status and message, each replica's state and node)
is read from its controller once a second for all applications at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from inferd import metrics
from inferd.catalog.spec import ModelSpec
from inferd.requests import TERMINAL, AdapterLoaded, Failed, InferenceRequest, ModelInfo
from inferd.runtime.backend import (
    AdapterError,
    ModelDeployment,
    Placement,
    ReplicaBackend,
    builtin_placement,
)
from inferd.runtime.call import WORKER_LOST, Call, ModelUnavailable

log = logging.getLogger("inferd.runtime")

DEPLOYMENT = "model"  # the one deployment in each application
REFRESH_S = 1.0
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
VANISHED_S = 10.0  # an application gone this long is re-created by the leader


# How long a leaving replica (roll-over, scale-down) may take to finish its in-flight requests;
# longer ones end with the retryable 503. Longer grace periods keep an idle replica that is
# being stopped (and its resources) around for the whole period: not raised until that is fixed.
GRACEFUL_SHUTDOWN_S = 5.0


@dataclass
class RayInstance:
    """One Serve replica of a model, as the controller last reported it."""

    id: str
    state: str  # Serve's replica state: STARTING, RUNNING, STOPPING, ...
    node_id: str | None
    node_ip: str | None
    ready_since: float | None = None  # monotonic, when this gateway first saw it running

    @property
    def ready(self) -> bool:
        return self.state == "RUNNING"


@dataclass
class AppView:
    status: str  # Serve's application status: DEPLOYING, RUNNING, DEPLOY_FAILED, ...
    message: str
    fingerprint: str | None  # what the gateway that pushed it declared
    replicas: list[dict[str, Any]]
    config: dict[str, Any]  # the deployment's config as Serve holds it


def app_name(spec: ModelSpec) -> str:
    if spec.deploy_id is not None:
        return spec.deploy_id
    return "builtin-" + re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name)


class RayBackend(ReplicaBackend):
    shared = True

    def __init__(
        self,
        address: str,
        *,
        namespace: str = "inferd",
        cpus_per_replica: float = 0.5,
        health_check_period_s: float = 10.0,
        health_check_timeout_s: float = 30.0,
        look_back_s: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.look_back_s = look_back_s
        self.address = address
        self.namespace = namespace
        self.cpus_per_replica = cpus_per_replica
        self.health_check_period_s = health_check_period_s
        self.health_check_timeout_s = health_check_timeout_s
        self.env = env or {}
        self.leader = False
        self.apps: dict[str, AppView] = {}  # as of the last refresh
        self.resources: dict[str, float] = {}  # the cluster's total resources
        self.refreshed = asyncio.Event()
        self._deployments: dict[str, RayDeployment] = {}
        self._task: asyncio.Task[None] | None = None
        # One `serve.run` at a time per process: Ray's serializer is not safe across threads
        # (concurrent pushes fail with "is not registered for pickle by value").
        self.push_lock = threading.Lock()

    def create_deployment(self, spec: ModelSpec, placement: Placement) -> RayDeployment:
        deployment = RayDeployment(self, spec, placement)
        self._deployments[deployment.app] = deployment
        return deployment

    def lead(self, leader: bool) -> None:
        self.leader = leader

    async def start(self) -> None:
        await asyncio.to_thread(self._connect)
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="ray-refresh")

    def _connect(self) -> None:
        # Serve's throughput-optimized mode (its own documented switch; an operator's value
        # wins): user code and the handle's router on the caller's loop, no thread hop per
        # streamed item. Read when Serve is imported, here and in every replica (SERVE_ENV).
        for name, value in SERVE_ENV.items():
            os.environ.setdefault(name, value)
        import ray
        from ray import serve

        if not ray.is_initialized():
            ray.init(
                address=self.address,
                namespace=self.namespace,
                logging_level="ERROR",
                log_to_driver=False,
            )
        # Ray's HTTP proxy would bind port 8000 on every node; handles only.
        serve.start(http_options={"location": "NoServer"})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception as exc:  # the head node may be briefly away: next second
                log.warning("ray status unavailable", extra={"error": type(exc).__name__})

    async def refresh(self) -> None:
        self.apps, self.resources = await asyncio.to_thread(_read_cluster)
        now = time.monotonic()
        for deployment in list(self._deployments.values()):
            deployment.observe(self.apps.get(deployment.app), now)
        self.refreshed.set()

    def forget(self, deployment: RayDeployment) -> None:
        if self._deployments.get(deployment.app) is deployment:
            del self._deployments[deployment.app]


def _read_cluster() -> tuple[dict[str, AppView], dict[str, float]]:
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    details = ray.get(client._controller.get_serve_instance_details.remote(), timeout=10)
    apps = {}
    for name, app in (details.get("applications") or {}).items():
        deployment = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        config = deployment.get("deployment_config") or {}
        user_config = config.get("user_config") or {}
        apps[name] = AppView(
            status=_plain(app.get("status", "")),
            message=app.get("message") or deployment.get("message") or "",
            fingerprint=user_config.get("fingerprint"),
            replicas=deployment.get("replicas") or [],
            config=config,
        )
    return apps, ray.cluster_resources()


def _plain(value: Any) -> str:
    """Serve's statuses come as enums (`ReplicaState.RUNNING`): their value."""
    return str(getattr(value, "value", value))


class RayDeployment(ModelDeployment):
    self_scaling = True

    def __init__(self, backend: RayBackend, spec: ModelSpec, placement: Placement) -> None:
        self.backend = backend
        self.spec = spec
        self.placement = placement
        self.app = app_name(spec)
        self.last_used = time.monotonic()
        self.scale_from_zero = True
        self.adapters: dict[str, str] = {}
        self._info: ModelInfo | None = None
        self._instances: dict[str, RayInstance] = {}
        self._view: AppView | None = None
        self._handle: Any = None
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._streams: dict[str, Any] = {}  # call id → Serve's response stream
        self._pushing: asyncio.Task[None] | None = None
        self._info_task: asyncio.Task[None] | None = None
        self._removed = False
        self._seen = False  # the controller has reported the application at least once
        self._missing_since: float | None = None
        # Read when metrics are scraped: nothing to count per request.
        metrics.IN_FLIGHT.labels(metrics.model_label(spec.name, spec.deploy_id)).set_function(
            self.in_flight
        )

    # What the controller says.

    def observe(self, view: AppView | None, now: float) -> None:
        self._view = view
        seen = {}
        for replica in view.replicas if view else []:
            rid = str(replica.get("replica_id"))
            instance = self._instances.get(rid) or RayInstance(rid, "", None, None)
            instance.state = _plain(replica.get("state", ""))
            instance.node_id = replica.get("node_id")
            instance.node_ip = replica.get("node_ip")
            if instance.ready and instance.ready_since is None:
                instance.ready_since = now
            elif not instance.ready:
                instance.ready_since = None
            seen[rid] = instance
        self._instances = seen
        # Asked of a running replica only: a call at zero instances would start one.
        running = any(i.ready for i in seen.values())
        if running and self._info is None and self._info_task is None:
            self._info_task = asyncio.create_task(self._fetch_info())
        self._seen = self._seen or view is not None
        if not self._removed and self._pushing is None and self._wants_push(now):
            self._pushing = asyncio.create_task(self._push(), name=f"ray-push-{self.app}")

    @property
    def replicas(self) -> list[RayInstance]:
        return [i for i in self._instances.values() if i.state != "STOPPING"]

    @property
    def ready(self) -> bool:
        return self._view is not None and self._view.status == "RUNNING"

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    def in_flight(self) -> int:
        return self._in_flight

    def load(self) -> int:
        return self._in_flight

    def instances(self) -> list[dict[str, Any]]:
        return [{"id": i.id, "state": i.state.lower(), "node": i.node_id} for i in self.replicas]

    @property
    def note(self) -> str | None:
        pool = self.placement.pool
        if pool and self.backend.resources and pool not in self.backend.resources:
            return (
                f"No node of the Ray cluster offers `{pool}`; waiting for one (declare it "
                f"on a node with `ray start --resources '{{\"{pool}\": N}}'`)."
            )
        view = self._view
        if view is not None and view.status != "RUNNING" and view.message:
            return f"Ray Serve: {view.message}"[:500]
        return None

    @property
    def failure(self) -> str | None:
        view = self._view
        if view is not None and view.status == "DEPLOY_FAILED":
            return f"The model's replicas failed to start: {view.message}"[:500]
        return None

    async def _fetch_info(self) -> None:
        from inferd.runtime.ray_replica import decode_info

        try:
            handle = await self._get_handle()
            self._info = decode_info(await handle.info.remote())
        except Exception as exc:
            log.warning("replica info unavailable", extra={"error": type(exc).__name__})
        finally:
            self._info_task = None

    # Pushing the application.

    def fingerprint(self) -> tuple[str, str]:
        """(code version, whole fingerprint): the spec and what needs new replicas, then
        that plus the sizes (Serve changes those in place)."""
        p = self.placement
        code = "|".join(
            [self.spec.model_dump_json(), str(p.pool), str(p.num_gpus), str(self.backend.env)]
        )
        code += f"|{self._num_cpus()}"
        version = hashlib.sha256(code.encode()).hexdigest()[:16]
        whole = hashlib.sha256(f"{version}|{p!r}".encode()).hexdigest()[:16]
        return version, whole

    def _num_cpus(self) -> float:
        return self.placement.num_cpus or self.backend.cpus_per_replica

    def _wants_push(self, now: float) -> bool:
        view = self._view
        if view is not None:
            self._missing_since = None
            return self.backend.leader and view.fingerprint != self.fingerprint()[1]
        if not self._seen:
            return True  # any gateway creates a missing application
        # Gone after it ran: deleted by a gateway whose user deleted the version (the leader
        # learns that at its next reconcile), or lost with the head node. The leader
        # re-creates it once it has stayed gone a while.
        if self._missing_since is None:
            self._missing_since = now
        return self.backend.leader and now - self._missing_since > VANISHED_S

    async def _push(self) -> None:
        try:
            await asyncio.to_thread(self._run_app)
        except Exception as exc:
            log.error(
                "ray deploy failed",
                extra={"model": self.spec.name, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
        finally:
            self._pushing = None

    def _run_app(self) -> None:
        from ray import serve
        from ray.serve.config import AutoscalingConfig, AutoscalingPolicy

        from inferd.runtime.ray_replica import ModelReplica

        p = self.placement
        version, whole = self.fingerprint()
        options: dict[str, Any] = {}
        if p.paused:
            options["num_replicas"] = 0
        elif p.autoscale is None:
            options["num_replicas"] = self.spec.replicas
        else:
            a = p.autoscale
            # Every field explicit: Serve's defaults moved between releases.
            options["autoscaling_config"] = AutoscalingConfig(
                min_replicas=a.min_instances,
                # One at least at first, as on the local backend: a model that cannot load
                # fails its deployment now, not at its first request.
                initial_replicas=min(max(1, a.min_instances), a.max_instances),
                max_replicas=a.max_instances,
                target_ongoing_requests=float(max(1, p.max_batch_size)),
                # Below the look-back window, as Serve requires (10 s is its default).
                metrics_interval_s=min(10.0, self.backend.look_back_s / 2),
                look_back_period_s=self.backend.look_back_s,
                smoothing_factor=1.0,
                upscale_smoothing_factor=None,
                downscale_smoothing_factor=None,
                upscaling_factor=None,
                downscaling_factor=None,
                downscale_delay_s=a.scale_down_window_s,
                downscale_to_zero_delay_s=a.scale_to_zero_s,
                upscale_delay_s=a.scale_up_window_s,
                aggregation_function="mean",
                policy=AutoscalingPolicy(),  # Serve's request-based policy
            )
        env = {name: os.environ.get(name, value) for name, value in SERVE_ENV.items()}
        actor: dict[str, Any] = {
            "num_cpus": self._num_cpus(),
            "runtime_env": {"env_vars": {**env, **self.backend.env}},
        }
        if p.num_gpus:
            actor["num_gpus"] = p.num_gpus
        if p.pool:
            actor["resources"] = {p.pool: max(1, p.num_gpus)}
        deployment = serve.deployment(ModelReplica).options(
            name=DEPLOYMENT,
            version=version,
            _internal=True,  # a fixed version: an identical push restarts nothing
            max_ongoing_requests=max(1, p.max_batch_size),
            max_queued_requests=-1,
            user_config={"fingerprint": whole},
            ray_actor_options=actor,
            health_check_period_s=self.backend.health_check_period_s,
            health_check_timeout_s=self.backend.health_check_timeout_s,
            graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
            **options,
        )
        with self.backend.push_lock:
            serve._run(
                deployment.bind(self.spec.model_dump_json()),
                name=self.app,
                route_prefix=None,
                _blocking=False,
            )
        log.info("ray application pushed", extra={"model": self.spec.name, "deploy_id": self.app})

    async def start(self) -> None:
        if self.app not in self.backend.apps and self._pushing is None:
            self._pushing = asyncio.create_task(self._push(), name=f"ray-push-{self.app}")

    async def replace(self, spec: ModelSpec) -> bool:
        """A changed built-in model: pushed under the same application (Serve replaces the
        replicas one by one, so the model keeps serving)."""
        self.spec = spec
        self.placement = builtin_placement(spec)
        self._info = None
        if self._pushing is not None:
            await asyncio.wait({self._pushing})
        self._pushing = asyncio.create_task(self._push(), name=f"ray-push-{self.app}")
        return True

    async def configure(self, placement: Placement) -> None:
        self.placement = placement
        self.scale_from_zero = not placement.paused

    async def stop(self) -> None:
        """This gateway stops calling the model; its instances serve the other gateways."""
        self.backend.forget(self)
        for task in (self._pushing, self._info_task):
            if task is not None:
                task.cancel()

    async def remove(self) -> None:
        from ray import serve

        self._removed = True
        await self.stop()
        with contextlib.suppress(Exception):  # another gateway deleted it first
            await asyncio.to_thread(serve.delete, self.app, False)

    async def scale_to(self, count: int) -> None:
        """Serve sizes the instances; a fixed count is only ever set through `configure`."""

    # Requests.

    async def _get_handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = await asyncio.to_thread(
                serve.get_deployment_handle, DEPLOYMENT, self.app
            )
        return self._handle

    async def submit(self, request: InferenceRequest, ready_timeout_s: float) -> Call:
        from inferd.runtime.ray_replica import encode_request

        self.last_used = time.monotonic()
        if not self.scale_from_zero:
            raise ModelUnavailable(f"The model `{self.spec.name}` has no instance.")
        handle = await self._get_handle()
        adapter = getattr(request, "adapter", None) or ""
        options = handle.options(stream=True, multiplexed_model_id=adapter)
        payload = encode_request(request)
        call = Call(f"{next(self._ids):x}", self._cancel)
        self._in_flight += 1
        deadline = time.monotonic() + ready_timeout_s
        for attempt in (1, 2):
            stream = options.remote(payload, self.adapters.get(adapter, ""))
            try:
                # Serve holds the request while an instance starts (from zero, too): wait for
                # the first events up to the caller's ready timeout.
                first = await asyncio.wait_for(
                    stream.__anext__(), max(0.001, deadline - time.monotonic())
                )
                break
            except TimeoutError:
                self._in_flight -= 1
                stream.cancel()
                raise ModelUnavailable(
                    f"The model `{self.spec.name}` is not ready; retry later."
                ) from None
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    self._in_flight -= 1
                    stream.cancel()
                    raise
                if attempt == 1 and not isinstance(exc, StopAsyncIteration):
                    # The replica went away before its first event (a roll-over, a lost
                    # node): nothing was produced, so another replica takes it.
                    log.info("ray call retried", extra={"error": type(exc).__name__})
                    continue
                self._in_flight -= 1
                call.deliver(_lost(self.spec.name, exc))
                return call
        if _deliver(call, first):
            self._in_flight -= 1
        else:
            self._streams[call.id] = stream
            asyncio.get_running_loop().create_task(self._pump(call, stream))
        return call

    async def _pump(self, call: Call, stream: Any) -> None:
        try:
            async for chunk in stream:
                if _deliver(call, chunk):
                    return
            call.deliver(WORKER_LOST)  # the stream ended without a last event
        except Exception as exc:
            if call.id in self._streams:  # not cancelled by the caller
                call.deliver(_lost(self.spec.name, exc))
        finally:
            self._streams.pop(call.id, None)
            self._in_flight -= 1

    def _cancel(self, call: Call) -> None:
        stream = self._streams.pop(call.id, None)
        if stream is not None:
            stream.cancel()

    # LoRA adapters, through Serve's multiplexing.

    async def load_adapter(self, name: str, path: str, ready_timeout_s: float = 300) -> None:
        """Remember the adapter (requests carry its path to whichever replica loads it) and
        load it into one replica now, so a broken adapter fails here, not at its first
        request."""
        from inferd.runtime.ray_replica import decode_events

        handle = await self._get_handle()
        try:
            reply = await asyncio.wait_for(
                handle.options(multiplexed_model_id=name).preload.remote(path), ready_timeout_s
            )
        except TimeoutError:
            raise ModelUnavailable(
                f"The model `{self.spec.name}` did not become ready to take the adapter."
            ) from None
        event = decode_events(reply)[0]
        if not isinstance(event, AdapterLoaded):
            raise AdapterError(
                event
                if isinstance(event, Failed)
                else Failed(status=500, code="engine_error", message="Adapter not loaded.")
            )
        self.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        """Forget it: no request names it any more, and each replica's multiplexer evicts it
        as others are loaded (Serve has no call that reaches every replica)."""
        if self.adapters.pop(name, None) is None:
            raise AdapterError(
                Failed(status=404, code="adapter_not_found", message=f"No adapter `{name}`.")
            )


def _deliver(call: Call, chunk: bytes) -> bool:
    """Hand a chunk's events to the call; whether the last one was terminal."""
    from inferd.runtime.ray_replica import decode_events

    done = False
    for event in decode_events(chunk):
        call.deliver(event)
        done = isinstance(event, TERMINAL)
    return done


def _lost(model: str, exc: BaseException) -> Failed:
    """A replica died (its node lost, killed) or Ray failed the call: retryable, not a 500."""
    log.warning("ray call failed", extra={"model": model, "error": type(exc).__name__})
    return WORKER_LOST
