"""One webhook delivery attempt, sent safely, and the policy that says when to try again.

`check_url` is the submit-time check: http(s), no credentials, a host that resolves to public
addresses only (`inferd.netguard`) unless the operator allow-listed its `host:port`.
`attempt` checks again at send time, because DNS answers change: it resolves once, refuses
internal addresses, and connects to the checked address while sending the original Host header
and TLS server name, so a rebinding answer between check and connect cannot reach an internal
service. Redirects are never followed; a 3xx counts as a failed attempt and is retried like any
non-2xx (a receiver that moved can fix its URL before the schedule runs out, and following would
send a signed payload to a host nobody checked at submit time). The response body is never
read, so a receiver cannot make us hold a large body.

`RetryPolicy` turns an attempt's outcome into the delay before the next one: a schedule (by
default about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h after attempts 1..6, then give up) with
jitter, at least the receiver's Retry-After (capped), and no retry after 410 Gone.

URLs and bodies are never logged: while an attempt runs, httpx's and httpcore's own log
records (which quote the URL, host and port) are dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import SplitResult, urlsplit

import httpx

from inferd import netguard

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
DEFAULT_SCHEDULE_TEXT = ",".join(f"{s:g}" for s in DEFAULT_SCHEDULE)  # for settings' default
# The longest a Retry-After can ever hold a delivery back (see RetryPolicy.next_delay).
MAX_RETRY_AFTER_S = 24 * 3600.0
MAX_URL_LENGTH = 2048
USER_AGENT = "inferd-webhooks"

# Error kinds of an attempt that got no HTTP response. All are retried but `invalid_url`.
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"  # refused, unreachable, TLS handshake or certificate failure
NETWORK_ERROR = "network_error"  # the connection broke after it was made
PROTOCOL_ERROR = "protocol_error"  # the receiver did not speak HTTP
URL_NOT_ALLOWED = "url_not_allowed"  # resolves to an internal address (now)
UNRESOLVABLE = "unresolvable"
INVALID_URL = "invalid_url"


class URLRejected(Exception):
    """A webhook URL that may not be used; `code` is one of the three URL error kinds."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DeliveryPolicy:
    # Exact `host:port` entries exempt from the address check (INFERD_WEBHOOKS_ALLOW_HOSTS,
    # parsed with netguard.parse_allow_hosts).
    allow_hosts: frozenset[str] = frozenset()
    timeout_s: float = 10.0  # the whole attempt: DNS, connect, TLS, request, response head
    # Resolves receivers' names (the server's `dns_nameservers`); None: the system's.
    resolver: netguard.Resolver | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None  # the receiver's HTTP status; None when no response came
    error: str | None  # why no response came (one of the kinds above); None when one did
    latency_ms: float
    retry_after: float | None = None  # seconds the receiver asked us to wait (non-2xx only)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed (the schedule decides whether there is one)."""
        return not self.delivered and self.status_code != 410 and self.error != INVALID_URL


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again, from how many attempts were made."""

    schedule: Sequence[float] = DEFAULT_SCHEDULE
    jitter: float = 0.1  # each scheduled delay is scaled by a random factor in [1-j, 1+j]
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        schedule = tuple(float(s) for s in self.schedule)
        if any(not math.isfinite(s) or s < 0 for s in schedule):
            raise ValueError("retry delays must be finite and non-negative seconds")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        object.__setattr__(self, "schedule", schedule)

    @classmethod
    def parse(cls, text: str, *, jitter: float = 0.1) -> RetryPolicy:
        """`"5,300,1800"` → delays in seconds before retries 1, 2, 3. Blank text: no retries."""
        try:
            schedule = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                "the retry schedule must be comma-separated seconds, e.g. 5,300,1800"
            ) from None
        return cls(schedule, jitter)

    def next_delay(
        self, attempt_number: int, retry_after: float | None = None, *, status: int | None = None
    ) -> float | None:
        """Seconds to wait after failed attempt `attempt_number` (1-based), or None: give up.

        A Retry-After lengthens the wait but is capped at the schedule's longest step (and
        24 h): a receiver can slow its own deliveries down, but cannot park a payload, which
        waits encrypted in our store, for longer than the schedule ever would. It never
        shortens a scheduled wait, and it does not add attempts.
        """
        if attempt_number < 1:
            raise ValueError("attempt_number counts attempts made, from 1")
        if status == 410 or attempt_number > len(self.schedule):
            return None
        delay = self.schedule[attempt_number - 1]
        # Jitter spreads the retries of deliveries that failed together (a receiver outage),
        # so they do not all come back at the same second when it recovers.
        delay *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, max(self.schedule), MAX_RETRY_AFTER_S))
        return delay

    def after(self, attempt_number: int, result: AttemptResult) -> float | None:
        """The delay before the next attempt after `result`, or None when there is none."""
        if not result.retryable:
            return None
        return self.next_delay(attempt_number, result.retry_after, status=result.status_code)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), capped at 24 h."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        # Compare as text first: int() of a 5000-digit string raises (and is slow).
        return MAX_RETRY_AFTER_S if len(value) > 9 else min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are GMT
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def new_client() -> httpx.AsyncClient:
    """The HTTP client deliveries should share (the defaults of a plain client are unsafe here).

    No proxies or .netrc credentials from the environment, no redirects, and no cookie jar: a
    receiver's cookie would otherwise be sent to every other receiver on the same address.
    """
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        headers={"User-Agent": USER_AGENT},
    )


async def check_url(url: str, policy: DeliveryPolicy) -> None:
    """The submit-time check; raises URLRejected."""
    await _target(url, policy)


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: DeliveryPolicy,
) -> AttemptResult:
    """POST `body` to `url` once; every failure is described in the result, none raised."""
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    hush = _hushed.set(True)
    try:
        async with asyncio.timeout(policy.timeout_s):
            pinned, host_header, server_name = await _target(url, policy)
            sent = httpx.Headers({"Content-Type": "application/json", "User-Agent": USER_AGENT})
            sent.update(headers)
            sent["Host"] = host_header
            # A fresh connection per delivery: a pooled one, keyed by address only, may have
            # been opened (and its certificate checked) for another host on the same address.
            sent["Connection"] = "close"
            async with client.stream(
                "POST",
                pinned,
                content=body,
                headers=sent,
                extensions={"sni_hostname": server_name},
                follow_redirects=False,
                timeout=policy.timeout_s,
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
    except URLRejected as exc:
        error = exc.code
    except (TimeoutError, httpx.TimeoutException):
        error = TIMEOUT
    except httpx.ConnectError:
        error = CONNECT_ERROR
    except httpx.RemoteProtocolError:
        error = PROTOCOL_ERROR
    except httpx.HTTPError:
        error = NETWORK_ERROR
    finally:
        _hushed.reset(hush)
    if status is not None:
        error = None  # the receiver answered; a failure while closing changes nothing
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    # Outcome only: the URL, the headers and the body stay out of logs.
    log.debug(
        "webhook attempt",
        extra={"status": status, "error": error, "duration_ms": latency_ms},
    )
    return AttemptResult(status, error, latency_ms, retry_after)


async def _target(url: str, policy: DeliveryPolicy) -> tuple[str, str, str]:
    """(URL to the checked address, Host header, TLS server name) for `url`; or URLRejected."""
    if len(url) > MAX_URL_LENGTH:
        raise URLRejected(INVALID_URL, f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise URLRejected(INVALID_URL, "the URL may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError:
        raise URLRejected(INVALID_URL, "the URL is not valid") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise URLRejected(INVALID_URL, "only http(s) URLs can receive webhooks")
    if parts.username is not None or parts.password is not None:
        raise URLRejected(INVALID_URL, "URLs with credentials are not allowed")
    if explicit_port == 0:
        raise URLRejected(INVALID_URL, "the URL's port is invalid")
    host = parts.hostname
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    try:
        name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    except UnicodeError:
        raise URLRejected(INVALID_URL, "the URL's host is not a valid name") from None
    try:
        address = await netguard.checked_address(
            host, port, allow_hosts=policy.allow_hosts, resolver=policy.resolver
        )
    except netguard.HostUnresolvable:
        raise URLRejected(UNRESOLVABLE, "the URL's host does not resolve") from None
    except netguard.AddressNotAllowed as exc:
        raise URLRejected(URL_NOT_ALLOWED, exc.reason) from None
    pinned = _pinned(parts, address, port)
    host_header = name if explicit_port is None else f"{name}:{explicit_port}"
    return pinned, host_header, name.strip("[]")


def _pinned(parts: SplitResult, address: str, port: int) -> str:
    netloc = f"[{address}]" if ":" in address else address
    return parts._replace(netloc=f"{netloc}:{port}", fragment="").geturl()


# While an attempt runs (in this task), httpx's and httpcore's records are dropped: they quote
# the request URL ("HTTP Request: POST http://...") and the host, port and TLS server name.
_hushed: contextvars.ContextVar[bool] = contextvars.ContextVar("webhook_hushed", default=False)


class _HushDuringAttempts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _hushed.get()


for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
):
    logging.getLogger(_name).addFilter(_HushDuringAttempts())
