"""Fetches user-given http(s) URLs without letting users reach our own network (SSRF).

The host is resolved once, every address must be public (the policy of `inferd.netguard`: no
loopback, private, link-local, multicast, reserved, unspecified or metadata ranges), and the
connection goes to the checked address (the name is kept for the Host header and TLS), so a
DNS answer cannot change in between.
Redirects are followed by hand and each hop is checked again. Size and time are capped.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin, urlsplit

import httpx

from inferd import netguard
from inferd.api.errors import APIError

MAX_REDIRECTS = 5


class FetchPolicy:
    def __init__(
        self,
        *,
        allow_private: bool,
        allow_hosts: frozenset[str],
        timeout_s: float,
        resolver: netguard.Resolver | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allow_hosts = allow_hosts  # "host:port" entries exempt from the address check
        self.timeout_s = timeout_s
        self.resolver = resolver  # None: netguard's process default


async def _checked_address(host: str, port: int, policy: FetchPolicy, field: str) -> str:
    try:
        return await netguard.checked_address(
            host,
            port,
            allow_hosts=policy.allow_hosts,
            allow_private=policy.allow_private,
            resolver=policy.resolver,
        )
    except netguard.HostUnresolvable:
        raise APIError(400, f"`{field}`: the URL's host does not resolve.", param=field) from None
    except netguard.AddressNotAllowed:
        raise APIError(
            400,
            f"`{field}`: the URL points to a private or reserved address, which is not allowed.",
            param=field,
            code="url_not_allowed",
        ) from None


async def fetch_url(
    client: httpx.AsyncClient, url: str, *, field: str, max_bytes: int, policy: FetchPolicy
) -> tuple[bytes, str]:
    """The body and content type of `url`, or an APIError naming `field`."""
    try:
        return await asyncio.wait_for(
            _fetch(client, url, field=field, max_bytes=max_bytes, policy=policy),
            policy.timeout_s,
        )
    except TimeoutError:
        raise APIError(
            400,
            f"`{field}`: fetching the URL took longer than {policy.timeout_s:g} s.",
            param=field,
            code="fetch_timeout",
        ) from None


async def _fetch(
    client: httpx.AsyncClient, url: str, *, field: str, max_bytes: int, policy: FetchPolicy
) -> tuple[bytes, str]:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise APIError(400, f"`{field}`: only http(s) URLs can be fetched.", param=field)
        if parts.username or parts.password:
            raise APIError(400, f"`{field}`: URLs with credentials are not allowed.", param=field)
        host = parts.hostname
        try:
            explicit_port = parts.port
        except ValueError:
            explicit_port = 0
        if explicit_port == 0:  # out of range, not a number, or 0 (which is no port at all)
            raise APIError(400, f"`{field}`: the URL's port is invalid.", param=field)
        port = explicit_port or (443 if parts.scheme == "https" else 80)
        address = await _checked_address(host, port, policy, field)
        netloc = f"[{address}]" if ":" in address else address
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "*/*"}
        if parts.scheme == "https":
            # Pooled by address, a TLS connection verified for one host name could carry the
            # next request for another name on the same address: one connection per fetch.
            headers["Connection"] = "close"
        try:
            async with client.stream(
                "GET", pinned, headers=headers, extensions={"sni_hostname": host}
            ) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise APIError(
                        400,
                        f"`{field}`: fetching the URL returned HTTP {response.status_code}.",
                        param=field,
                        code="fetch_failed",
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise too_large(field, max_bytes)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise too_large(field, max_bytes)
                return bytes(body), response.headers.get("content-type", "")
        except httpx.HTTPError as exc:
            raise APIError(
                400,
                f"`{field}`: the URL could not be fetched ({type(exc).__name__}).",
                param=field,
                code="fetch_failed",
            ) from None
    raise APIError(400, f"`{field}`: too many redirects.", param=field, code="fetch_failed")


def too_large(field: str, max_bytes: int) -> APIError:
    return APIError(
        413, f"`{field}`: the file exceeds {max_bytes} bytes.", param=field, code="too_large"
    )
