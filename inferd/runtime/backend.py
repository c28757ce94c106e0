"""Where replicas run. `LocalBackend` starts worker processes on this machine, one `Replica`
each, grouped per model by `runtime.deployment.Deployment`; `RayBackend` (runtime/ray_backend.py)
places a model's replicas on a Ray cluster as one Serve application and scales them itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from inferd.catalog.spec import ModelSpec
from inferd.requests import Failed, InferenceRequest, ModelInfo
from inferd.runtime.call import Call


@dataclass(frozen=True, slots=True)
class Autoscale:
    """A deployed version's scaling settings, as the control plane holds them."""

    min_instances: int
    max_instances: int
    scale_up_window_s: float
    scale_down_window_s: float
    scale_to_zero_s: float


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a model's instances run and how many. A built-in model has a fixed count
    (`spec.replicas`); a deployed version autoscales within its settings, in its pool."""

    autoscale: Autoscale | None = None
    max_batch_size: int = 16  # requests one instance takes at once
    pool: str | None = None  # an accelerator pool's name (`A100-80GB`); None: CPU
    num_gpus: int = 0  # real GPUs per instance (0 for CPU and emulated pools)
    num_cpus: float | None = None  # CPUs an instance reserves on a cluster (None: the default)
    paused: bool = False  # the account's spending limit is used up: no instances


def builtin_placement(spec: ModelSpec) -> Placement:
    """A built-in model: a fixed count (`spec.replicas`) on the CPU, taking as many requests
    at once as its engine batches (an LLM's sequences, an embedder's batch)."""
    batch = spec.options.get("max_seqs") or spec.options.get("max_batch") or 64
    return Placement(max_batch_size=int(batch))


class AdapterError(Exception):
    """A replica refused or failed an adapter load/unload; `failed` says why (status, code)."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message)
        self.failed = failed


class Replica(ABC):
    spec: ModelSpec
    info: ModelInfo | None
    adapters: dict[str, str]  # LoRA name → path: loaded into the worker as soon as it is ready

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @property
    @abstractmethod
    def in_flight(self) -> int: ...

    @abstractmethod
    async def start(self) -> None:
        """Begin starting; readiness is reported through `wait_ready`."""

    @abstractmethod
    async def wait_ready(self) -> None: ...

    @abstractmethod
    def submit(self, request: InferenceRequest) -> Call: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter (a GGUF LoRA file) into the running model under `name`, and
        again into every worker that replaces this one; AdapterError if refused."""
        raise AdapterError(_NO_ADAPTERS)

    async def unload_adapter(self, name: str) -> None:
        raise AdapterError(_NO_ADAPTERS)


_NO_ADAPTERS = Failed(
    status=400, code="adapters_unsupported", message="This runtime does not take adapters."
)


class Instance(Protocol):
    """One instance of a model, as uptime billing and the deploy object see it."""

    @property
    def ready(self) -> bool: ...

    @property
    def ready_since(self) -> float | None: ...  # monotonic; billed from here


class ModelDeployment(ABC):
    """A served model on some backend: requests in, its instances and their state out."""

    spec: ModelSpec
    last_used: float  # monotonic, the last request's arrival (scale to zero)
    scale_from_zero: bool  # a request finding no instance starts one (autoscaled)
    adapters: dict[str, str]  # LoRA name → GGUF path
    # The backend sizes the instances itself from `configure` (Ray Serve's autoscaler);
    # otherwise the control plane's autoscaler calls `scale_to`.
    self_scaling = False

    @property
    @abstractmethod
    def replicas(self) -> Sequence[Instance]: ...

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @property
    @abstractmethod
    def info(self) -> ModelInfo | None: ...

    @abstractmethod
    def in_flight(self) -> int: ...

    @abstractmethod
    def load(self) -> int: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None:
        """This process stops serving the model (shutdown)."""

    async def remove(self) -> None:
        """The model is no longer served anywhere: its instances stop."""
        await self.stop()

    @abstractmethod
    async def submit(self, request: InferenceRequest, ready_timeout_s: float) -> Call: ...

    @abstractmethod
    async def scale_to(self, count: int) -> None: ...

    async def replace(self, spec: ModelSpec) -> bool:
        """Serve `spec` instead, in place; False when the backend cannot (the runtime then
        stops these replicas and starts new ones)."""
        return False

    async def configure(self, placement: Placement) -> None:  # noqa: B027
        """The version's settings as they are now (a self-scaling backend applies them)."""

    @abstractmethod
    async def load_adapter(self, name: str, path: str, ready_timeout_s: float = 300) -> None: ...

    @abstractmethod
    async def unload_adapter(self, name: str) -> None: ...

    @property
    def note(self) -> str | None:
        """Why instances wanted are not running, when the backend knows (None: no reason)."""
        return None

    @property
    def failure(self) -> str | None:
        """Why the model can never run as deployed (its replicas fail to start), if so."""
        return None

    @abstractmethod
    def instances(self) -> list[dict[str, Any]]:
        """Each instance: its id, state and the node it runs on (the deploy object)."""


class ReplicaBackend(ABC):
    # Whether every gateway sees the same instances (a cluster) rather than its own processes:
    # then one gateway (the control plane's leader) bills their uptime and changes their size.
    shared = False

    @abstractmethod
    def create_deployment(self, spec: ModelSpec, placement: Placement) -> ModelDeployment: ...

    async def start(self) -> None:  # noqa: B027 (a hook: most backends need nothing)
        """Connect to where replicas run (before any model is added)."""

    async def close(self) -> None:  # noqa: B027
        """Disconnect; what runs on a shared cluster keeps running for other gateways."""

    def lead(self, leader: bool) -> None:  # noqa: B027
        """The control plane says whether this gateway is its leader (may change a shared
        cluster's deployments), at every reconcile."""
