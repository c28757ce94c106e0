"""Standard Webhooks signatures (https://www.standardwebhooks.com), as receivers verify them.

Each delivery carries `webhook-id` (the message id, the same on every retry so receivers can
drop duplicates), `webhook-timestamp` (Unix seconds of this attempt: receivers refuse
timestamps more than a few minutes off, so every retry is signed afresh) and
`webhook-signature`: `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}." + body)), one per
active secret, space-separated, so a receiver holding either the old or the new secret accepts
deliveries during a rotation. A secret is `whsec_` + base64 of the key bytes; the key is the
decoded bytes, not the text. Bodies are UTF-8 JSON (the reference verifiers decode them as text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source

SECRET_PREFIX = "whsec_"
# 24 bytes (192 bits, the spec's minimum and Svix's size) encode to 32 base64 characters with
# no padding, so every decoder reads them the same, padded or not.
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the prefix is optional, padding may be omitted)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{msg_id}.{timestamp}.{body}`."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every active secret (rotation)."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    # The id is sent verbatim in a header and signed as text: no whitespace or control characters.
    if not msg_id or not msg_id.isprintable() or any(c.isspace() for c in msg_id):
        raise ValueError("a webhook message id must be non-empty printable text without spaces")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }
