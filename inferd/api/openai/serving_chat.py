"""POST /v1/openai/chat/completions: text, JSON modes, tools, logprobs and n choices."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api import sse
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.generation import Generation, GenerationFailed, Run, merged, start_run
from inferd.api.openai.protocol import ChatCompletionRequest
from inferd.api.openai.tools import ToolPlan, new_call_id, plan_tools
from inferd.api.response_format import constraint_for
from inferd.api.responses import JSONResponse

# Budget reservations only: images are billed at the tokens the model actually gave them.
TOKENS_PER_IMAGE_BOUND = 2048


def logprob_entries(items: list[list]) -> list[dict[str, Any]]:
    entries = []
    for item in items:
        _, text, logprob, special = item[:4]
        if special:
            continue
        top = item[4] if len(item) > 4 else []
        entries.append(
            {
                "token": text,
                "logprob": logprob,
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
                    for _, t, lp in top
                ],
            }
        )
    return entries


def build_payloads(gateway: Gateway, body: ChatCompletionRequest, plan: ToolPlan) -> list[dict]:
    params = body.sampling_params(gateway.settings.max_output_tokens)
    if body.max_completion_tokens and not body.max_tokens:
        params["max_tokens"] = body.max_completion_tokens
    params["constraint"] = plan.constraint() or constraint_for(body.response_format)
    if body.logprobs:
        params["top_logprobs"] = body.top_logprobs or 0
    payload: dict[str, Any] = {
        "kind": "generate",
        "messages": body.wire_messages(),
        "params": params,
    }
    if plan.active:
        payload["tools"] = [{"type": "function", "function": f.spec()} for f in plan.functions]
        payload["tool_prompt"] = plan.system_prompt()
    payloads = []
    for i in range(body.n):
        seed = None if body.seed is None else body.seed + i  # n choices, n samples
        payloads.append({**payload, "params": {**params, "seed": seed}})
    return payloads


async def create_chat_completion(gateway: Gateway, request: Request) -> Response:
    body = await gateway.read_json(request, ChatCompletionRequest)
    request.scope.setdefault("state", {})["route"] = "chat"
    body.refuse_unsupported()
    gateway.require_features(body.model, body.features())
    plan = plan_tools(body.tools, body.tool_choice)
    payloads = build_payloads(gateway, body, plan)
    admission = await gateway.admit(
        request,
        body.model,
        ("text-generation",),
        prompt_bound=body.prompt_bound(TOKENS_PER_IMAGE_BOUND),
        max_output=(payloads[0]["params"]["max_tokens"] or 0) * body.n or None,
    )
    if urls := body.image_urls():
        try:
            images = await gateway.media.images(urls, "messages.content.image_url")
        except APIError as exc:
            await admission.finish(exc.status)
            raise
        encoded = [base64.b64encode(image).decode() for image in images]
        payloads = [{**payload, "images": encoded} for payload in payloads]
    run = await start_run(gateway, admission, request, payloads)
    completion_id = "chatcmpl-" + admission.request_id
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _stream(run, body, plan, completion_id, created),
            media_type=sse.MEDIA_TYPE,
            headers=sse.HEADERS,
        )
    results = await run.complete(request)
    choices = []
    for generation, items in zip(run.generations, results, strict=True):
        message: dict[str, Any] = {"role": "assistant", "content": generation.text}
        finish = generation.openai_finish
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
            "model": admission.spec.name,
            "choices": choices,
            "usage": run.usage(),
        }
    )


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


async def _stream(
    run: Run, body: ChatCompletionRequest, plan: ToolPlan, completion_id: str, created: int
) -> AsyncIterator[bytes]:
    model = run.admission.spec.name

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
                text = "".join(item[1] for item in items)
                logprobs = logprob_entries(items) if body.logprobs else None
                deltas = state.feed(text) if text else []
                for n, delta in enumerate(deltas):
                    yield chunk(generation.index, delta, logprobs=logprobs if n == 0 else None)
        except GenerationFailed as exc:
            failed = exc.error.status
            yield sse.frame(exc.error.body())
            yield sse.DONE
            return
        last = len(finished) - 1
        for n, generation in enumerate(finished):
            state = streams[generation.index]
            for delta in state.finish():
                yield chunk(generation.index, delta)
            finish = generation.openai_finish
            if state.made_call and finish == "stop":
                finish = "tool_calls"
            usage = {} if body.include_usage or n != last else {"usage": run.usage()}
            yield chunk(generation.index, {}, finish, **usage)
        if body.include_usage:
            # OpenAI: usage arrives on one extra chunk with empty choices.
            yield sse.frame(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": run.usage(),
                }
            )
        yield sse.DONE
    finally:
        await run.aclose(failed)
