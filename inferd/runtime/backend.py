"""Where replicas run. `LocalBackend` starts worker processes on this machine; a Ray Serve
backend implements the same two classes to place replicas on a cluster."""

from __future__ import annotations

from abc import ABC, abstractmethod

from inferd.catalog.spec import ModelSpec
from inferd.requests import InferenceRequest, ModelInfo
from inferd.runtime.call import Call


class Replica(ABC):
    spec: ModelSpec
    info: ModelInfo | None

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


class ReplicaBackend(ABC):
    @abstractmethod
    def create_replica(self, spec: ModelSpec, index: int) -> Replica: ...
