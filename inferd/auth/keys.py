"""API key material: random keys, keyed hashes for lookup, the server secret."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_PREFIX = "ik_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(secret: bytes, key: str) -> str:
    """HMAC-SHA256 under the server secret: a leaked database alone cannot be brute-forced."""
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


def load_or_create_secret(home: Path, configured: str | None) -> bytes:
    if configured:
        return configured.encode("utf-8")
    path = home / "master.key"
    if path.exists():
        return path.read_bytes().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value
