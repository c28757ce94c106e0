"""Engines for unary tasks (speech, vision, token/text classification, ...).

A TaskModel turns one request's inputs into one output; the TaskEngine queues requests and runs
them on one thread in arrival order, handing the model every queued request at once when it can
batch (`max_batch`). The model's usage units (tokens, images, audio seconds) come back with the
output for billing.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from inferd.engines.base import Emit, Engine
from inferd.engines.batching import take_batch
from inferd.requests import ModelInfo, TaskDone, TaskRequest, Usage


@dataclass
class TaskResult:
    output: dict[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0
    units: dict[str, float] = field(default_factory=dict)  # images, audio_seconds, characters
    files: list[bytes] = field(default_factory=list)  # binary outputs (images, audio)

    def event(self) -> TaskDone:
        return TaskDone(
            output=self.output,
            files=self.files,
            usage=Usage(
                input_tokens=self.input_tokens, output_tokens=self.output_tokens, **self.units
            ),
        )


class TaskModel(ABC):
    max_batch: int = 1

    def info(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def run(self, request: Any) -> TaskResult:
        """One request (the task's type from `inferd.requests`). Raise EngineError for bad
        input (it becomes a 4xx)."""

    def run_batch(self, batch: list[Any]) -> list[TaskResult | Exception]:
        out: list[TaskResult | Exception] = []
        for request in batch:
            try:
                out.append(self.run(request))
            except Exception as exc:  # one bad request fails alone
                out.append(exc)
        return out


class BatchedTaskModel(TaskModel):
    """A model that runs a whole batch in one call; single requests are batches of one."""

    @abstractmethod
    def run_batch(self, batch: list[Any]) -> list[TaskResult | Exception]: ...

    def run(self, request: Any) -> TaskResult:
        result = self.run_batch([request])[0]
        if isinstance(result, Exception):
            raise result
        return result


class TaskEngine(Engine[TaskRequest]):
    def __init__(self, emit: Emit, model: TaskModel, options: dict[str, Any]) -> None:
        super().__init__(emit)
        self.model = model
        self.batch_wait_s = float(options.get("batch_wait_ms", 2)) / 1000.0
        self.batch_max_wait_s = float(options.get("batch_max_wait_ms", 10)) / 1000.0
        self._queue: queue.SimpleQueue[tuple[str, TaskRequest] | None] = queue.SimpleQueue()
        self._cancelled: set[str] = set()
        self._last_batch = 0
        self._thread = threading.Thread(target=self._loop, name="task-runner", daemon=True)
        self._thread.start()

    def info(self) -> ModelInfo:
        return ModelInfo(extra=self.model.info())

    def submit(self, request_id: str, request: TaskRequest) -> None:
        self._queue.put((request_id, request))

    def cancel(self, request_id: str) -> None:
        self._cancelled.add(request_id)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self) -> list[tuple[str, TaskRequest]] | None:
        batch = take_batch(
            self._queue,
            max_size=self.model.max_batch,
            gap_s=self.batch_wait_s,
            max_wait_s=self.batch_max_wait_s,
            expect=self._last_batch,
        )
        self._last_batch = len(batch) if batch else 0
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [(rid, request) for rid, request in batch if rid not in self._cancelled]
            self._cancelled.difference_update(rid for rid, _ in batch)
            if not live:
                continue
            try:
                results = self.model.run_batch([request for _, request in live])
            except Exception as exc:
                results = [exc] * len(live)
            for (request_id, _), result in zip(live, results, strict=True):
                if isinstance(result, Exception):
                    self.fail(request_id, result)
                    continue
                self.emit(request_id, result.event())
