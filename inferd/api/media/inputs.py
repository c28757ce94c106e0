"""The gateway's access to user-given media: one HTTP client, one fetch policy, the limits."""

from __future__ import annotations

import asyncio

import httpx

from inferd.api.errors import APIError
from inferd.api.media.fetch import FetchPolicy
from inferd.api.media.images import ImageLimits, load_image
from inferd.config import Settings


class MediaInputs:
    def __init__(self, settings: Settings) -> None:
        self.policy = FetchPolicy(
            allow_private=settings.fetch_allow_private,
            allow_hosts=frozenset(h.strip() for h in settings.fetch_allow_hosts.split(",") if h),
            timeout_s=settings.fetch_timeout_s,
        )
        self.image_limits = ImageLimits(settings.max_image_bytes, settings.max_images)
        # Redirects are followed by fetch_url itself (each hop re-checked); no proxies from env.
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.fetch_timeout_s),
            headers={"User-Agent": "inferd-fetch"},
        )

    async def images(self, refs: list[str], field: str) -> list[bytes]:
        if len(refs) > self.image_limits.max_count:
            raise APIError(
                400,
                f"`{field}`: at most {self.image_limits.max_count} images per request.",
                param=field,
            )
        return list(
            await asyncio.gather(
                *(
                    load_image(
                        ref,
                        field,
                        client=self.client,
                        policy=self.policy,
                        limits=self.image_limits,
                    )
                    for ref in refs
                )
            )
        )

    async def aclose(self) -> None:
        await self.client.aclose()
