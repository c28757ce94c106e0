"""POST /v1/openai/chat/completions: text, JSON modes, tools, logprobs and n choices."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import error_body
from inferd.api.gateway import Gateway
from inferd.api.openai import serving_routed as routed
from inferd.api.openai.protocol import ChatCompletionRequest, ChatMessage
from inferd.api.openai.tools import ToolPlan, new_call_id, plan_tools
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse
from inferd.auth import Principal
from inferd.catalog import ModelSpec, Route
from inferd.requests import ChatTurn, ContentPart, Generate, ImagePart, TextPart, Token
from inferd.serving import RequestMeta
from inferd.serving.generation import Generation, GenerationFailed, Run, merged

# Engine finish reasons → OpenAI's.
OPENAI_FINISH = {"eos": "stop", "stop_sequence": "stop", "length": "length"}


def openai_finish(generation: Generation) -> str:
    return OPENAI_FINISH.get(generation.finish_reason or "", "stop")


def logprob_entries(items: list[Token]) -> list[dict[str, Any]]:
    entries = []
    for item in items:
        if item.special:
            continue
        entries.append(
            {
                "token": item.text,
                "logprob": item.logprob,
                "bytes": list(item.text.encode("utf-8")),
                "top_logprobs": [
                    {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode("utf-8"))}
                    for t in item.top or ()
                ],
            }
        )
    return entries


def chat_turn(message: ChatMessage) -> ChatTurn:
    """A wire message as the neutral turn: text, or text and image placeholders in order."""
    content: str | list[ContentPart]
    if message.image_urls():
        content = []
        for part in message.content or ():
            if part.get("type") == "text":
                content.append(TextPart(str(part.get("text", ""))))
            elif part.get("type") == "image_url":
                content.append(ImagePart())
    else:
        content = message.text()
    return ChatTurn(
        role=message.role,
        content=content,
        name=message.name or None,
        tool_calls=message.tool_calls or None,
        tool_call_id=message.tool_call_id or None,
    )


def generate_requests(
    gateway: Gateway, body: ChatCompletionRequest, plan: ToolPlan, images: list[bytes]
) -> list[Generate]:
    params = body.sampling_params(gateway.settings.max_output_tokens)
    if body.max_completion_tokens and not body.max_tokens:
        params.max_tokens = body.max_completion_tokens
    params.constraint = plan.constraint() or constraint_for(body.response_format)
    if body.logprobs:
        params.logprobs = True
        params.top_logprobs = body.top_logprobs or 0
    messages = [chat_turn(m) for m in body.messages]
    tools = None
    if plan.active:
        tools = [{"type": "function", "function": f.spec()} for f in plan.functions]
    requests = []
    for i in range(body.n):
        seed = None if body.seed is None else body.seed + i  # n choices, n samples
        requests.append(
            Generate(
                params=msgspec.structs.replace(params, seed=seed),
                messages=messages,
                tools=tools,
                tool_prompt=plan.system_prompt() if plan.active else None,
                images=images,
            )
        )
    return requests


async def create_chat_completion(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "chat")
    principal = await gateway.principal(request)
    data = await gateway.read_object(request)
    body = gateway.validate(ChatCompletionRequest, data)
    body.refuse_unsupported()
    found = gateway.serving.lookup(principal, body.model, "text-generation")
    if isinstance(found, Route):
        tokens = body.max_completion_tokens or body.max_tokens

        async def start_local(spec: ModelSpec) -> tuple[Run, ToolPlan]:
            return await start_chat(gateway, principal, spec, body, meta)

        async def render_local(started: tuple[Run, ToolPlan]) -> Response:
            return await render_chat(request, started[0], body, started[1])

        return await routed.serve_route(
            gateway,
            principal,
            found,
            meta,
            routed.CHAT,
            data,
            stream=body.stream,
            include_usage=body.include_usage,
            max_output=tokens * body.n if tokens else None,
            start_local=start_local,
            render_local=render_local,
        )
    run, plan = await start_chat(gateway, principal, found, body, meta)
    return await render_chat(request, run, body, plan)


async def start_chat(
    gateway: Gateway,
    principal: Principal,
    spec: ModelSpec,
    body: ChatCompletionRequest,
    meta: RequestMeta,
) -> tuple[Run, ToolPlan]:
    """The request admitted and every choice started on `spec`."""
    serving = gateway.serving
    serving.require_features(spec, body.features())
    plan = plan_tools(body.tools, body.tool_choice)
    images: list[bytes] = []
    if urls := body.image_urls():
        images = await gateway.media.images(urls, "messages.content.image_url")
    requests = generate_requests(gateway, body, plan, images)
    return await serving.generate(principal, spec, requests, meta), plan


async def render_chat(
    request: Request, run: Run, body: ChatCompletionRequest, plan: ToolPlan
) -> Response:
    completion_id = "chatcmpl-" + run.admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            stream_chunks(run, body, plan, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    results = await unless_disconnected(request, run.complete())
    choices = []
    for generation, items in zip(run.generations, results, strict=True):
        message: dict[str, Any] = {"role": "assistant", "content": generation.text}
        finish = openai_finish(generation)
        call = plan.parse(generation.text) if plan.active else None
        if call is not None:
            name, arguments = call
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": new_call_id(),
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            }
            finish = "tool_calls" if finish == "stop" else finish
        choices.append(
            {
                "index": generation.index,
                "message": message,
                "finish_reason": finish,
                "logprobs": {"content": logprob_entries(items)} if body.logprobs else None,
            }
        )
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": run.admission.model_name,
            "choices": choices,
            "usage": usage(run),
        }
    )


def usage(run: Run) -> dict[str, Any]:
    return {
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "total_tokens": run.prompt_tokens + run.completion_tokens,
        "estimated_cost": run.cost,
    }


class ChoiceStream:
    """Turns one choice's items into chunk deltas.

    Text streams as it comes. A forced call to one function streams its arguments as they are
    generated. Otherwise, with tools on, output that may be a call (it starts with `{` or a
    code fence) is held until the end and then sent as a call or as text.
    """

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self.streaming_call = plan.active and plan.mode == "required" and plan.forced is not None
        self.buffer_all = plan.active and plan.mode == "required" and plan.forced is None
        self.holding = False
        self.held: list[str] = []
        self.started_call = False
        self.made_call = False

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.streaming_call:
            deltas = []
            if not self.started_call:
                deltas.append(self._call_head(self.plan.forced.name))  # type: ignore[union-attr]
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
            return deltas
        if self.buffer_all or self.holding:
            self.held.append(text)
            return []
        if self.plan.active and not "".join(self.held).strip():
            if not text.strip():
                self.held.append(text)
                return []
            if text.lstrip()[:1] in ("{", "`"):
                self.holding = True
                self.held.append(text)
                return []
        pending, self.held = "".join(self.held), []
        return [{"content": pending + text}]

    def finish(self) -> list[dict[str, Any]]:
        if self.streaming_call or not self.held:
            return []
        text, self.held = "".join(self.held), []
        call = self.plan.parse(text) if self.plan.active else None
        if call is None:
            return [{"content": text}]
        name, arguments = call
        return [
            self._call_head(name),
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]},
        ]

    def _call_head(self, name: str) -> dict[str, Any]:
        self.started_call = self.made_call = True
        return {
            "tool_calls": [
                {
                    "index": 0,
                    "id": new_call_id(),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }


async def stream_chunks(
    run: Run, body: ChatCompletionRequest, plan: ToolPlan, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = run.admission.model_name

    def chunk(
        index: int,
        delta: dict[str, Any],
        finish: str | None = None,
        logprobs: list | None = None,
        **extra: Any,
    ) -> bytes:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if body.logprobs:
            choice["logprobs"] = {"content": logprobs or []}
        return sse.frame(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
                **extra,
            }
        )

    failed: int | None = None
    streams = {g.index: ChoiceStream(plan) for g in run.generations}
    try:
        for generation in run.generations:
            yield chunk(generation.index, {"role": "assistant", "content": ""})
        finished: list[Generation] = []
        try:
            async for generation, items in merged(run):
                state = streams[generation.index]
                if items is None:
                    finished.append(generation)
                    continue
                text = "".join(item.text for item in items)
                logprobs = logprob_entries(items) if body.logprobs else None
                deltas = state.feed(text) if text else []
                for n, delta in enumerate(deltas):
                    yield chunk(generation.index, delta, logprobs=logprobs if n == 0 else None)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(error_body(exc.error))
            yield sse.DONE
            return
        last = len(finished) - 1
        for n, generation in enumerate(finished):
            state = streams[generation.index]
            for delta in state.finish():
                yield chunk(generation.index, delta)
            finish = openai_finish(generation)
            if state.made_call and finish == "stop":
                finish = "tool_calls"
            extra = {} if body.include_usage or n != last else {"usage": usage(run)}
            yield chunk(generation.index, {}, finish, **extra)
        if body.include_usage:
            # OpenAI: usage arrives on one extra chunk with empty choices.
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage(run),
                }
            )
        yield sse.DONE
    finally:
        await run.aclose(failed)
