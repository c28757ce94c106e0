"""Text generation on the serving path, shared by OpenAI chat, completions, native and jobs.

A `Run` is one admitted request: `n` generations (choices) of the same prompt, each a call to
the model's worker. `start_run` waits for every worker's first event before returning, so a
prompt the engine refuses (context overflow, bad schema) is a proper error even when the
client asked for a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inferd import metrics
from inferd.billing.pricing import token_cost
from inferd.requests import (
    Failed,
    Finished,
    FinishReason,
    Generate,
    PromptScores,
    Started,
    Token,
    Tokens,
)
from inferd.runtime import Call
from inferd.serving.admission import Admission
from inferd.serving.errors import RequestError, from_failed, out_of_order

if TYPE_CHECKING:
    from inferd.serving.core import Serving


class GenerationFailed(Exception):
    """The worker reported an error after output had started."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Generation:
    """One choice: the event stream of one worker call."""

    index: int
    call: Call
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    last_token: Token | None = None
    prompt_items: list[Token] = field(default_factory=list)  # scored prompt (echo)
    text_parts: list[str] = field(default_factory=list)

    async def items(self) -> AsyncIterator[list[Token]]:
        """Tokens as they are generated."""
        call = self.call
        while not call.finished:
            items = self._take(await call.next())
            if items:
                yield items

    async def collect(self) -> list[Token]:
        # No async generator: a non-streaming answer is most requests, and this is their loop.
        collected: list[Token] = []
        call = self.call
        while not call.finished:
            items = self._take(await call.next())
            if items:
                collected.extend(items)
        return collected

    def _take(self, event: object) -> list[Token] | None:
        """Account one event; the tokens it carries, if any."""
        if isinstance(event, Tokens):
            items = event.items
            self.text_parts.extend(item.text for item in items)
            self.completion_tokens += len(items)  # the exact count arrives with Finished
            return items
        if isinstance(event, PromptScores):
            self.prompt_items = event.items
        elif isinstance(event, Finished):
            self.finish_reason = event.finish_reason
            self.completion_tokens = event.completion_tokens
            self.last_token = event.last_token
        elif isinstance(event, Failed):
            raise GenerationFailed(from_failed(event))
        return None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


@dataclass
class Run:
    admission: Admission
    generations: list[Generation]

    @property
    def prompt_tokens(self) -> int:
        return self.generations[0].prompt_tokens

    @property
    def completion_tokens(self) -> int:
        if len(self.generations) == 1:
            return self.generations[0].completion_tokens
        return sum(g.completion_tokens for g in self.generations)

    @property
    def cost(self) -> float:
        return token_cost(self.admission.spec.price, self.prompt_tokens, self.completion_tokens)

    async def collect(self) -> list[list[Token]]:
        """All choices to the end (non-streaming)."""
        if len(self.generations) == 1:
            return [await self.generations[0].collect()]
        return await asyncio.gather(*(g.collect() for g in self.generations))

    async def complete(self) -> list[list[Token]]:
        """Non-streaming: every choice to its end, then settle. A worker error becomes its
        RequestError; a caller that cancels (client gone) cancels the work."""
        try:
            results = await self.collect()
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
        model = self.admission.meta.label or ""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        metrics.token_counter(model, "input").inc(prompt)
        metrics.token_counter(model, "output").inc(completion)
        self.admission.meta.finish_reason = self.generations[0].finish_reason
        await self.admission.finish(status, prompt, completion, self.cost)


async def start_run(serving: Serving, admission: Admission, requests: list[Generate]) -> Run:
    calls: list[Call] = []
    try:
        for request in requests:
            calls.append(await serving.submit(admission, request))
        if len(calls) == 1:  # the common case, without a task per request
            firsts = [await calls[0].next()]
        else:
            firsts = await asyncio.gather(*(call.next() for call in calls))
    except RequestError as exc:
        for call in calls:
            call.close()
        await admission.finish(exc.status)
        raise
    except BaseException:
        for call in calls:
            call.close()
        await admission.finish(499)
        raise
    prompt_tokens = []
    for first in firsts:
        if not isinstance(first, Started):
            for call in calls:
                call.close()
            error = from_failed(first) if isinstance(first, Failed) else out_of_order()
            await admission.finish(error.status)
            raise error
        prompt_tokens.append(first.prompt_tokens)
    generations = [
        Generation(i, call, n) for i, (call, n) in enumerate(zip(calls, prompt_tokens, strict=True))
    ]
    return Run(admission, generations)


async def merged(run: Run) -> AsyncIterator[tuple[Generation, list[Token] | None]]:
    """Tokens of all choices as they come; (generation, None) when a choice finishes."""
    if len(run.generations) == 1:
        generation = run.generations[0]
        async for items in generation.items():
            yield generation, items
        yield generation, None
        return
    queue: asyncio.Queue[tuple[Generation, list[Token] | None, BaseException | None]] = (
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
