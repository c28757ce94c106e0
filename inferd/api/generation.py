"""One text generation seen from the API: shared by OpenAI chat, completions and native.

`start_generation` waits for the worker's first event before any response is sent, so a
prompt the engine refuses (context overflow, bad template) becomes a proper 4xx even when
the client asked for a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from inferd import metrics
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
    call: Call
    admission: Admission
    request: Request
    prompt_tokens: int
    _events: AsyncIterator[dict[str, Any]]
    completion_tokens: int = 0
    finish_reason: str | None = None
    last_token: list | None = None
    text_parts: list[str] = field(default_factory=list)

    async def items(self) -> AsyncIterator[list[list]]:
        """Token items ([id, text, logprob, special]) as they are generated."""
        async for event in self._events:
            kind = event["ev"]
            if kind == "tokens":
                items = event["items"]
                self.text_parts.extend(item[1] for item in items)
                self.completion_tokens += len(items)  # exact count arrives with "done"
                yield items
            elif kind == "done":
                self.finish_reason = event["finish_reason"]
                self.completion_tokens = event["completion_tokens"]
                self.last_token = event.get("last_token")
                self._account()
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
    def cost(self) -> float:
        return token_cost(self.admission.spec.price, self.prompt_tokens, self.completion_tokens)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "estimated_cost": self.cost,
        }

    def _account(self) -> None:
        model = self.admission.spec.name
        metrics.TOKENS.labels(model, "input").inc(self.prompt_tokens)
        metrics.TOKENS.labels(model, "output").inc(self.completion_tokens)
        self.request.scope["state"].update(
            request_id=self.admission.request_id,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            finish_reason=self.finish_reason,
        )

    async def aclose(self, status: int | None = None) -> None:
        """Every exit path: cancel the worker's work if unfinished, then settle the admission
        with what was generated (a client that left mid-stream pays for what it got)."""
        self.call.close()
        if status is None:
            status = 200 if self.finish_reason else 499
        await self.admission.finish(status, self.prompt_tokens, self.completion_tokens, self.cost)


async def start_generation(
    gateway: Gateway, admission: Admission, request: Request, payload: dict[str, Any]
) -> Generation:
    try:
        call = await gateway.submit(admission, payload)
    except APIError as exc:
        await admission.finish(exc.status)
        raise
    except BaseException:
        await admission.finish(500)
        raise
    events = aiter(call)
    try:
        first = await anext(events)
    except BaseException:
        call.close()
        await admission.finish(499)
        raise
    if first["ev"] != "start":
        call.close()
        error = (
            from_engine_event(first)
            if first["ev"] == "error"
            else APIError(500, "The model answered out of order.", code="protocol_error")
        )
        await admission.finish(error.status)
        raise error
    return Generation(call, admission, request, int(first["prompt_tokens"]), events)
