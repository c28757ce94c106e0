"""Calls to external OpenAI-compatible providers (a route's targets with a `base_url`).

One aiohttp session per gateway keeps connections to each provider alive. Base URLs are the
operator's configuration, not user input, so they are not SSRF-guarded (docs/routing.md).
Every failure becomes a `RequestError` in inferd's shape: connection errors and timeouts as
502/504, the provider's 429 and 5xx as they came (all of them retryable on another target), and
its other 4xx as they came, with the provider's message (the client's request was wrong).
Nothing of a request's content is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from inferd.catalog import RouteTarget
from inferd.config import Settings
from inferd.serving.errors import RequestError

# Statuses after which the next target is tried: the provider, not the request, failed.
RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_ERROR_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


def retryable(error: RequestError) -> bool:
    return error.status in RETRYABLE


class Upstream:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=s.route_connect_timeout_s, sock_read=None
                ),
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, target: RouteTarget, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A unary call: the provider's JSON answer (an object), or RequestError."""
        assert target.base_url is not None
        try:
            async with asyncio.timeout(self.settings.route_first_byte_timeout_s):
                async with self.session().post(
                    target.base_url.rstrip("/") + path,
                    data=orjson.dumps(body),
                    headers=_headers(target),
                ) as response:
                    if response.status >= 400:
                        raise await _provider_error(target, response)
                    raw = await response.content.read(MAX_BODY_BYTES + 1)
        except TimeoutError:
            raise _timeout(target) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(target, exc) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise RequestError(
                502,
                f"The provider of `{target.label}` sent an answer that is not JSON.",
                code="upstream_invalid",
            )
        return answer

    async def stream(self, target: RouteTarget, path: str, body: dict[str, Any]) -> ProviderStream:
        """A streamed call, opened and read up to its first chunk with output (or its end):
        everything that can fail before the client sees a byte fails here."""
        assert target.base_url is not None
        stream = ProviderStream(target, self.settings.route_idle_timeout_s)
        try:
            async with asyncio.timeout(self.settings.route_first_byte_timeout_s):
                response = await self.session().post(
                    target.base_url.rstrip("/") + path,
                    data=orjson.dumps(body),
                    headers=_headers(target),
                )
                stream.response = response
                if response.status >= 400:
                    raise await _provider_error(target, response)
                await stream.read_to_first_output()
        except TimeoutError:
            stream.close()
            raise _timeout(target) from None
        except aiohttp.ClientError as exc:
            stream.close()
            raise _unreachable(target, exc) from None
        except BaseException:
            stream.close()
            raise
        return stream


class ProviderStream:
    """A provider's server-sent events as parsed chunks; the ones read before the first
    output are held and given first. Ends at `[DONE]` or the end of the body."""

    def __init__(self, target: RouteTarget, idle_timeout_s: float) -> None:
        self.target = target
        self.idle_timeout_s = idle_timeout_s
        self.response: aiohttp.ClientResponse | None = None
        self.held: list[dict[str, Any]] = []
        self.done = False
        self.complete = False  # `[DONE]` or a finish arrived: an end, not a cut

    async def read_to_first_output(self) -> None:
        while not self.done:
            chunk = await self._next()
            if chunk is None:
                break
            self.held.append(chunk)
            if _has_output(chunk):
                return
        if not self.complete:
            raise self._cut()

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Every chunk to the end; RequestError when the provider fails midway."""
        held, self.held = self.held, []
        for chunk in held:
            yield chunk
        while not self.done:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    chunk = await self._next()
            except TimeoutError:
                raise _timeout(self.target) from None
            except aiohttp.ClientError as exc:
                raise _unreachable(self.target, exc) from None
            if chunk is None:
                break
            yield chunk
        if not self.complete:
            raise self._cut()

    def _cut(self) -> RequestError:
        return RequestError(
            502,
            f"The provider of `{self.target.label}` ended its stream before the answer did.",
            code="upstream_truncated",
        )

    async def _next(self) -> dict[str, Any] | None:
        """The next `data:` event as an object; None at the end. An error event raises."""
        assert self.response is not None
        data: list[bytes] = []
        while True:
            line = await self.response.content.readline()
            if not line:  # the body ended
                self.done = True
                if data:
                    break
                return None
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    break
                continue
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            # `event:`, `id:`, `retry:` and comments carry nothing a chat stream needs
        payload = b"\n".join(data)
        if payload == b"[DONE]":
            self.done = self.complete = True
            return None
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise RequestError(
                502,
                f"The provider of `{self.target.label}` sent an event that is not JSON.",
                code="upstream_invalid",
            ) from None
        if not isinstance(chunk, dict):
            raise RequestError(
                502,
                f"The provider of `{self.target.label}` sent an invalid event.",
                code="upstream_invalid",
            )
        if "error" in chunk and "choices" not in chunk:
            raise _error_from(self.target, 502, chunk)
        if _finishes(chunk):
            self.complete = True
        return chunk

    def close(self) -> None:
        if self.response is not None:
            self.response.close()  # frees the connection at once, even mid-body


def _finishes(chunk: dict[str, Any]) -> bool:
    return any(
        isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ()
    ) or bool(chunk.get("usage"))


def _has_output(chunk: dict[str, Any]) -> bool:
    """A chunk that carries output, a finish or the usage: the point of no return."""
    if chunk.get("usage") and not chunk.get("choices"):
        return True
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason") or choice.get("text"):
            return True
        delta = choice.get("delta") or {}
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("refusal")
        ):
            return True
    # embeddings and other non-chat objects
    return "data" in chunk


def _headers(target: RouteTarget) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


async def _provider_error(target: RouteTarget, response: aiohttp.ClientResponse) -> RequestError:
    raw = await response.content.read(MAX_ERROR_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = _error_from(target, response.status, body)
    retry_after = response.headers.get("Retry-After")
    if retry_after and retry_after.isdigit():
        error.headers = {"Retry-After": retry_after}
    return error


def _error_from(target: RouteTarget, status: int, body: Any) -> RequestError:
    """The provider's error in inferd's shape, its message kept (it is about the request)."""
    message, code = None, None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):
            message = error
    status = status if 400 <= status <= 599 else 502
    text = str(message)[:1000] if message else f"HTTP {status}"
    return RequestError(
        status,
        f"The provider of `{target.label}` answered {status}: {text}",
        code=str(code)[:64] if isinstance(code, str | int) else "upstream_error",
    )


def _timeout(target: RouteTarget) -> RequestError:
    return RequestError(
        504, f"The provider of `{target.label}` did not answer in time.", code="upstream_timeout"
    )


def _unreachable(target: RouteTarget, exc: Exception) -> RequestError:
    return RequestError(
        502,
        f"The provider of `{target.label}` could not be reached ({type(exc).__name__}).",
        code="upstream_unreachable",
    )
