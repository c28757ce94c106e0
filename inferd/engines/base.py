"""The interface every engine implements inside a worker process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from inferd.requests import Event, Failed, InferenceRequest, ModelInfo

# emit(request_id, event) sends one event back to the gateway; thread-safe.
Emit = Callable[[str, Event], None]
R = TypeVar("R", bound=InferenceRequest)


class EngineError(Exception):
    """A request the engine refuses; ``status`` is the HTTP status the gateway should use."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def adapters_unsupported() -> EngineError:
    return EngineError("This model does not take adapters.", code="adapters_unsupported")


class Engine(ABC, Generic[R]):
    """Receives requests, runs them (usually on its own threads) and emits their events."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit

    @abstractmethod
    def info(self) -> ModelInfo:
        """Facts the gateway needs about the loaded model (context length, dims, ...)."""

    @abstractmethod
    def submit(self, request_id: str, request: R) -> None:
        """Accept a request; must not block on the work itself."""

    def cancel(self, request_id: str) -> None:
        """Stop working on a request whose client went away."""

    def close(self) -> None:
        """Release model resources."""

    def load_adapter(self, request_id: str, name: str, path: str) -> None:
        """Add a LoRA adapter (a file on this machine) under `name`, without reloading the
        model; answers `AdapterLoaded` or `Failed` under `request_id`."""
        self.fail(request_id, adapters_unsupported())

    def unload_adapter(self, request_id: str, name: str) -> None:
        """Remove an adapter; answers `AdapterUnloaded` or `Failed` under `request_id`."""
        self.fail(request_id, adapters_unsupported())

    def fail(self, request_id: str, exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            event = Failed(status=exc.status, code=exc.code, message=str(exc))
        else:
            # The message of an unexpected exception may quote input; report only its type.
            event = Failed(
                status=500,
                code="engine_error",
                message=f"The model failed on this request ({type(exc).__name__}).",
            )
        self.emit(request_id, event)
