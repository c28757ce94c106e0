"""Where replicas run. `LocalBackend` starts worker processes on this machine; a Ray Serve
backend implements the same two classes to place replicas on a cluster."""

from __future__ import annotations

from abc import ABC, abstractmethod

from inferd.catalog.spec import ModelSpec
from inferd.requests import Failed, InferenceRequest, ModelInfo
from inferd.runtime.call import Call


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


class ReplicaBackend(ABC):
    @abstractmethod
    def create_replica(self, spec: ModelSpec, index: int) -> Replica: ...
