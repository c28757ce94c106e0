"""The gateway's access to user-given media: one HTTP client, one fetch policy, the limits.

A media field may hold a file upload (multipart), a data URL or an http(s) URL; whatever it
is, the bytes are checked (size → 413, format → 415, decodable → 400) before a model sees them.
"""

from __future__ import annotations

import asyncio

import httpx

from inferd import netguard
from inferd.api.errors import APIError
from inferd.api.media.audio import sniff_audio
from inferd.api.media.fetch import FetchPolicy, fetch_url, too_large
from inferd.api.media.images import check_decodes, decode_data_url, sniff_image
from inferd.config import Settings


class MediaInputs:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The server's resolver (`dns_nameservers`, else the system's); webhook delivery gets
        # one of the same setting (api/app.py).
        resolver = netguard.Resolver.from_setting(settings.dns_nameservers)
        self.policy = FetchPolicy(
            allow_private=settings.fetch_allow_private,
            allow_hosts=netguard.parse_allow_hosts(settings.fetch_allow_hosts),
            timeout_s=settings.fetch_timeout_s,
            resolver=resolver,
        )
        # Redirects are followed by fetch_url itself (each hop re-checked); no proxies from env.
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.fetch_timeout_s),
            headers={"User-Agent": "inferd-fetch"},
        )

    async def images(self, refs: list[str], field: str) -> list[bytes]:
        limit = self.settings.max_images
        if len(refs) > limit:
            raise APIError(400, f"`{field}`: at most {limit} images per request.", param=field)
        return list(await asyncio.gather(*(self.image(ref, field) for ref in refs)))

    async def image(self, value: str | bytes, field: str) -> bytes:
        data = await self._bytes(value, field, self.settings.max_image_bytes)
        if sniff_image(data) is None:
            raise _unsupported(field, "image", "jpg, png or webp")
        await asyncio.to_thread(check_decodes, data, field)
        return data

    async def audio(self, value: str | bytes, field: str) -> bytes:
        data = await self._bytes(value, field, self.settings.max_audio_bytes)
        if sniff_audio(data) is None:
            raise _unsupported(field, "audio", "mp3, wav, flac or ogg")
        return data

    async def _bytes(self, value: str | bytes, field: str, max_bytes: int) -> bytes:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str) and value.startswith("data:"):
            if len(value) > max_bytes * 4 // 3 + 256:
                raise too_large(field, max_bytes)
            data = decode_data_url(value, field)
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            data, _ = await fetch_url(
                self.client, value, field=field, max_bytes=max_bytes, policy=self.policy
            )
        else:
            raise APIError(
                400, f"`{field}` must be a file, an http(s) URL or a data URL.", param=field
            )
        if not data:
            raise APIError(400, f"`{field}` is empty.", param=field)
        if len(data) > max_bytes:
            raise too_large(field, max_bytes)
        return data

    async def aclose(self) -> None:
        await self.client.aclose()


def _unsupported(field: str, kind: str, formats: str) -> APIError:
    return APIError(
        415,
        f"`{field}`: unsupported {kind} format; send {formats}.",
        param=field,
        code="unsupported_media_type",
    )
