"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Each delivery carries ``webhook-id`` (the event's id: the same on every retry, so
a receiver can drop duplicates), ``webhook-timestamp`` (unix seconds of this
attempt) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed by
the endpoint's secret, of ``<id>.<timestamp>.<body>``. The secret is written
``whsec_`` and the base64 of the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret (settings have checked its form)."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret_key(secret), msg_id, timestamp, body),
        "Content-Type": "application/json",
    }
