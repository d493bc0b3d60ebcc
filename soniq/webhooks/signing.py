"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

A secret is ``whsec_`` + base64 of random bytes; a signature is ``v1,`` + base64 of
HMAC-SHA256, keyed by the secret's decoded bytes, over
``"{webhook-id}.{webhook-timestamp}.{body}"``.
Several signatures are sent space-separated while a rotated secret's grace window lasts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from soniq.errors import WEBHOOK_INVALID, SoniqError

PREFIX = "whsec_"
SECRET_BYTES = 32


def generate_secret() -> str:
    """A new ``whsec_`` secret (32 random bytes)."""
    return PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SoniqError(
            WEBHOOK_INVALID,
            "the secret is not a Standard Webhooks secret (`whsec_` + base64); "
            "use the secret `app.webhooks.add` or `rotate_secret` returned",
        ) from None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as ``msg_id`` at ``timestamp``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret, space-separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise SoniqError(
        WEBHOOK_INVALID,
        f"missing header {name!r}: not a Standard Webhooks request (pass the request's "
        "headers as received)",
    )


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: float = 300,
) -> dict[str, Any]:
    """Check a received webhook and return its parsed JSON body.

    ``secret`` may be a list (e.g. old and new during a rotation): any one matching signature
    is enough. Raises ``SoniqError`` ``SONIQ_WEBHOOK_INVALID`` for a missing header, a bad
    signature, or a timestamp further than ``tolerance`` seconds from now.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    try:
        ts = int(ts_text)
    except ValueError:
        raise SoniqError(
            WEBHOOK_INVALID, f"webhook-timestamp {ts_text!r} is not unix seconds"
        ) from None
    skew = time.time() - ts
    if abs(skew) > tolerance:
        when = "old" if skew > 0 else "in the future"
        raise SoniqError(
            WEBHOOK_INVALID,
            f"stale timestamp: webhook-timestamp is {abs(skew):.0f} s {when}, beyond the "
            f"tolerance of {tolerance:g} s (a replay, or a clock out of sync)",
        )
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise SoniqError(WEBHOOK_INVALID, "no secret given to verify with")
    offered = [s.partition(",")[2] for s in sig_header.split() if s.startswith("v1,")]
    expected = [signature(k, msg_id, ts, raw).partition(",")[2] for k in keys]
    # compare every pair in constant time, without stopping at the first match
    ok = False
    for want in expected:
        for got in offered:
            ok |= hmac.compare_digest(want.encode(), got.encode())
    if not ok:
        raise SoniqError(
            WEBHOOK_INVALID,
            "bad signature: no v1 signature matches the secret(s) given (wrong secret, "
            "or the body was changed; verify the raw body bytes as received)",
        )
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise SoniqError(WEBHOOK_INVALID, "the signed body is not JSON") from None
    if not isinstance(parsed, dict):
        raise SoniqError(WEBHOOK_INVALID, "the signed body is not a JSON object")
    return parsed
