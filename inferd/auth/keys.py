"""API key material: random keys, keyed hashes for lookup, encryption at rest.

Two sub-keys are derived from the server's master secret: one for the lookup hash (HMAC), one
for AES-GCM encryption of the key itself (needed to verify scoped JWTs signed with it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_PREFIX = "ik_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyVault:
    def __init__(self, master_secret: bytes) -> None:
        self._hash_key = hashlib.sha256(b"inferd/key-hash\0" + master_secret).digest()
        self._aead = AESGCM(hashlib.sha256(b"inferd/key-encrypt\0" + master_secret).digest())

    def digest(self, key: str) -> str:
        """A leaked database alone cannot be brute-forced: the hash is keyed."""
        return hmac.new(self._hash_key, key.encode("utf-8"), hashlib.sha256).hexdigest()

    def encrypt(self, key: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, key.encode("utf-8"), b"inferd-api-key")
        return base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        raw = base64.b64decode(token)
        return self._aead.decrypt(raw[:12], raw[12:], b"inferd-api-key").decode("utf-8")


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
