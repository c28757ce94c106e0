"""Generated images, kept briefly on disk and served at unguessable URLs.

The one exception to "nothing outlives the request" (DESIGN.md): each file lives `ttl_s`
(default one hour), after which it is refused (404) and a sweeper deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from pathlib import Path

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}\.(png|jpg|webp|wav|mp3)$")
TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


class BlobStore:
    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._sweeper: asyncio.Task | None = None

    def put(self, data: bytes, ext: str) -> str:
        """Store `data`; returns its name (32 random bytes, URL-safe, and the extension)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{secrets.token_urlsafe(32)}.{ext}"
        fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return name

    def path(self, name: str) -> Path | None:
        """The live file called `name`, or None (unknown, malformed or expired)."""
        if not _TOKEN.match(name):
            return None
        path = self.root / name
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > self.ttl_s:
            path.unlink(missing_ok=True)
            return None
        return path

    def sweep(self) -> int:
        removed = 0
        deadline = time.time() - self.ttl_s
        for path in self.root.glob("*") if self.root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < deadline:
                    path.unlink()
                    removed += 1
        return removed

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        interval = max(0.5, min(self.ttl_s / 4, 60.0))
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
