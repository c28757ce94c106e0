"""A route asked for on the OpenAI endpoints: try its targets with fallback, then answer in
inferd's own wire format whichever target served.

A target here runs exactly as if it had been asked for by name (`start_local` /
`render_local`, the endpoint's own). A provider gets the client's body as it came, with its
own model name and, when streaming, `stream_options.include_usage` forced on so every request
is billed; its answer is re-emitted as inferd's: our id and the route's name, usage (with the
cost) on the finishing chunk, and a separate empty-choices usage chunk only when the client
asked for one. Tools, JSON mode, logprobs and every other field pass through untouched.
Nothing is sent to the client before a target produced output; after that a failure ends the
stream with an error event, never a silent switch to another target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.errors import error_body
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.billing.pricing import token_cost
from inferd.catalog import ModelSpec, Route, RouteTarget
from inferd.serving import Admission, RequestError, RequestMeta
from inferd.serving.upstream import ProviderStream

log = logging.getLogger("inferd.routing")


@dataclass(frozen=True)
class Endpoint:
    """What differs between the OpenAI endpoints a route serves."""

    path: str  # under the provider's base URL
    object: str  # the streamed chunks' `object`
    id_prefix: str


CHAT = Endpoint("/chat/completions", "chat.completion.chunk", "chatcmpl-")
COMPLETIONS = Endpoint("/completions", "text_completion", "cmpl-")
EMBEDDINGS = Endpoint("/embeddings", "list", "")


async def serve_route(
    gateway: Gateway,
    principal: Principal,
    route: Route,
    meta: RequestMeta,
    endpoint: Endpoint,
    data: dict[str, Any],
    *,
    stream: bool,
    include_usage: bool,
    max_output: int | None,
    start_local: Callable[[ModelSpec], Awaitable[Any]],
    render_local: Callable[[Any], Awaitable[Response]],
) -> Response:
    serving = gateway.serving
    router = serving.router
    meta.routed_as = route.name
    targets = await router.plan(principal, route)
    sent = dict(data)
    if stream:
        sent["stream_options"] = {**(_object(data.get("stream_options"))), "include_usage": True}
    # Any byte of the body is at least a token's worth: a bound for the budget's reservation.
    prompt_bound = _size(data)

    async def start(target: RouteTarget) -> Any:
        if target.external:
            return await serving.call_provider(
                principal,
                route,
                target,
                meta,
                endpoint.path,
                {**sent, "model": target.model},
                stream=stream,
                prompt_bound=prompt_bound,
                max_output=max_output,
            )
        meta.served_by = target.label
        return await start_local(serving.route_target(route, target))

    target, started = await router.first_ready(route, targets, start)
    if not target.external:
        return await render_local(started)
    admission, answer = started
    if isinstance(answer, ProviderStream):
        relay = Relay(admission, route, target, endpoint, include_usage, gateway)
        return StreamingResponse(
            relay.frames(answer), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS
        )
    return JSONResponse(await _unary(admission, endpoint, answer))


async def _unary(admission: Admission, endpoint: Endpoint, answer: dict[str, Any]) -> dict:
    if not isinstance(answer.get("usage"), dict):
        log.warning(
            "provider sent no usage",
            extra={"model": admission.model_name, "served_by": admission.meta.served_by},
        )
    prompt, completion = _tokens(answer.get("usage"), 0)
    cost = token_cost(admission.spec.price, prompt, completion)
    if endpoint.id_prefix:
        answer["id"] = endpoint.id_prefix + admission.request_id
        answer["created"] = int(time.time())
    answer["model"] = admission.model_name
    answer["usage"] = _usage(answer.get("usage"), prompt, completion, cost, endpoint)
    await admission.finish(200, prompt, completion, cost)
    return answer


class Relay:
    """A provider's stream re-emitted as inferd's."""

    def __init__(
        self,
        admission: Admission,
        route: Route,
        target: RouteTarget,
        endpoint: Endpoint,
        include_usage: bool,
        gateway: Gateway,
    ) -> None:
        self.admission = admission
        self.route = route
        self.target = target
        self.endpoint = endpoint
        self.include_usage = include_usage
        self.router = gateway.serving.router
        self.head = {
            "id": endpoint.id_prefix + admission.request_id,
            "object": endpoint.object,
            "created": int(time.time()),
            "model": admission.model_name,
        }

    async def frames(self, stream: ProviderStream) -> AsyncIterator[bytes]:
        usage: Any = None
        finishing: list[dict[str, Any]] = []  # held until the usage is known
        seen = 0  # chunks with output: the completion's size if the provider sends no usage
        status, prompt, completion, cost = 499, 0, 0, 0.0
        try:
            try:
                async for chunk in stream.chunks():
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    choices = chunk.get("choices")
                    if not choices or not isinstance(choices, list):
                        continue  # the provider's usage chunk: re-emitted our way below
                    out = {**self.head, "choices": choices}
                    if any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
                        finishing.append(out)
                        continue
                    seen += 1
                    yield sse.frame(out)
            except RequestError as exc:
                status, completion = exc.status, seen
                await self.router.failed_midway(self.route, self.target, exc)
                yield sse.frame(error_body(exc))
                yield sse.DONE
                return
            prompt, completion = _tokens(usage, seen)
            cost = token_cost(self.admission.spec.price, prompt, completion)
            body = _usage(usage, prompt, completion, cost, self.endpoint)
            for n, out in enumerate(finishing):
                if n == len(finishing) - 1 and not self.include_usage:
                    out["usage"] = body
                yield sse.frame(out)
            if self.include_usage:
                yield sse.frame({**self.head, "choices": [], "usage": body})
            status = 200
            yield sse.DONE
        finally:
            stream.close()  # a client gone mid-stream stops the provider's generation too
            if status == 499:
                completion = seen
                cost = token_cost(self.admission.spec.price, 0, completion)
            await self.admission.finish(status, prompt, completion, cost)


def _tokens(usage: Any, fallback_completion: int) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, fallback_completion
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        completion if isinstance(completion, int) and completion >= 0 else fallback_completion,
    )


def _usage(
    given: Any, prompt: int, completion: int, cost: float, endpoint: Endpoint
) -> dict[str, Any]:
    """The provider's usage object (its details kept) with inferd's counts and cost."""
    body = dict(given) if isinstance(given, dict) else {}
    body["prompt_tokens"] = prompt
    if endpoint is not EMBEDDINGS:
        body["completion_tokens"] = completion
    body["total_tokens"] = prompt + completion
    body["estimated_cost"] = cost
    return body


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _size(data: dict[str, Any]) -> int:
    return len(orjson.dumps(data))
