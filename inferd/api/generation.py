"""Text generation seen from the API: shared by OpenAI chat, completions and native.

A `Run` is one admitted request: `n` generations (choices) of the same prompt, each a call to
the model's worker. `start_run` waits for every worker's first event before any response is
sent, so a prompt the engine refuses (context overflow, bad schema) becomes a proper 4xx even
when the client asked for a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from inferd import metrics
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError, from_engine_event
from inferd.api.gateway import Admission, Gateway
from inferd.billing.pricing import token_cost
from inferd.runtime import Call

# Engine finish reasons → OpenAI's.
OPENAI_FINISH = {"eos": "stop", "stop_sequence": "stop", "length": "length"}


class GenerationFailed(Exception):
    """The worker reported an error after output had started."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event.get("message", "generation failed"))
        self.error = from_engine_event(event)


@dataclass
class Generation:
    """One choice: the event stream of one worker call."""

    index: int
    call: Call
    prompt_tokens: int
    _events: AsyncIterator[dict[str, Any]]
    completion_tokens: int = 0
    finish_reason: str | None = None
    last_token: list | None = None
    prompt_items: list[list] = field(default_factory=list)  # scored prompt (echo)
    text_parts: list[str] = field(default_factory=list)

    async def items(self) -> AsyncIterator[list[list]]:
        """Token items ([id, text, logprob, special, top?]) as they are generated."""
        async for event in self._events:
            kind = event["ev"]
            if kind == "tokens":
                items = event["items"]
                self.text_parts.extend(item[1] for item in items)
                self.completion_tokens += len(items)  # exact count arrives with "done"
                yield items
            elif kind == "prompt":
                self.prompt_items = event["items"]
            elif kind == "done":
                self.finish_reason = event["finish_reason"]
                self.completion_tokens = event["completion_tokens"]
                self.last_token = event.get("last_token")
                return
            elif kind == "error":
                raise GenerationFailed(event)

    async def collect(self) -> list[list]:
        collected: list[list] = []
        async for items in self.items():
            collected.extend(items)
        return collected

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def openai_finish(self) -> str:
        return OPENAI_FINISH.get(self.finish_reason or "", "stop")


@dataclass
class Run:
    admission: Admission
    request: Request
    generations: list[Generation]

    @property
    def prompt_tokens(self) -> int:
        return self.generations[0].prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return sum(g.completion_tokens for g in self.generations)

    @property
    def cost(self) -> float:
        return token_cost(self.admission.spec.price, self.prompt_tokens, self.completion_tokens)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "estimated_cost": self.cost,
        }

    async def collect(self) -> list[list[list]]:
        """All choices to the end (non-streaming)."""
        if len(self.generations) == 1:
            return [await self.generations[0].collect()]
        return await asyncio.gather(*(g.collect() for g in self.generations))

    async def complete(self, request: Request) -> list[list[list]]:
        """Non-streaming: every choice to its end, then settle. A worker error becomes its
        APIError; a client that leaves cancels the work."""
        try:
            results = await unless_disconnected(request, self.collect())
        except GenerationFailed as exc:
            await self.aclose(exc.error.status)
            raise exc.error from None
        except BaseException:
            await self.aclose(499)
            raise
        await self.aclose()
        return results

    async def aclose(self, status: int | None = None) -> None:
        """Every exit path: cancel unfinished work, then settle the admission with what was
        generated (a client that left mid-stream pays for what it got)."""
        for generation in self.generations:
            generation.call.close()
        if status is None:
            status = 200 if all(g.finish_reason for g in self.generations) else 499
        model = self.admission.spec.name
        metrics.TOKENS.labels(model, "input").inc(self.prompt_tokens)
        metrics.TOKENS.labels(model, "output").inc(self.completion_tokens)
        self.request.scope["state"].update(
            request_id=self.admission.request_id,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            finish_reason=self.generations[0].finish_reason,
        )
        await self.admission.finish(status, self.prompt_tokens, self.completion_tokens, self.cost)


async def start_run(
    gateway: Gateway, admission: Admission, request: Request, payloads: list[dict[str, Any]]
) -> Run:
    calls: list[Call] = []
    try:
        for payload in payloads:
            calls.append(await gateway.submit(admission, payload))
        streams = [aiter(call) for call in calls]
        if len(streams) == 1:  # the common case, without a task per request
            firsts = [await anext(streams[0])]
        else:
            firsts = await asyncio.gather(*(anext(s) for s in streams))
    except APIError as exc:
        for call in calls:
            call.close()
        await admission.finish(exc.status)
        raise
    except BaseException:
        for call in calls:
            call.close()
        await admission.finish(499)
        raise
    for first in firsts:
        if first["ev"] != "start":
            for call in calls:
                call.close()
            error = (
                from_engine_event(first)
                if first["ev"] == "error"
                else APIError(500, "The model answered out of order.", code="protocol_error")
            )
            await admission.finish(error.status)
            raise error
    generations = [
        Generation(i, call, int(first["prompt_tokens"]), stream)
        for i, (call, first, stream) in enumerate(zip(calls, firsts, streams, strict=True))
    ]
    return Run(admission, request, generations)


async def merged(run: Run) -> AsyncIterator[tuple[Generation, list[list] | None]]:
    """Items of all choices as they come; (generation, None) when a choice finishes."""
    if len(run.generations) == 1:
        generation = run.generations[0]
        async for items in generation.items():
            yield generation, items
        yield generation, None
        return
    queue: asyncio.Queue[tuple[Generation, list[list] | None, BaseException | None]] = (
        asyncio.Queue()
    )

    async def pump(generation: Generation) -> None:
        try:
            async for items in generation.items():
                queue.put_nowait((generation, items, None))
            queue.put_nowait((generation, None, None))
        except BaseException as exc:
            queue.put_nowait((generation, None, exc))

    tasks = [asyncio.create_task(pump(g)) for g in run.generations]
    try:
        remaining = len(tasks)
        while remaining:
            generation, items, error = await queue.get()
            if error is not None:
                raise error
            if items is None:
                remaining -= 1
            yield generation, items
    finally:
        for task in tasks:
            task.cancel()
