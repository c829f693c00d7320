"""The ``K2E-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The timestamp is signed with the body, so a receiver that refuses old timestamps is not
open to replays of a captured delivery; ``K2E-Event-Id`` lets it drop a repeat of an
event it already handled (deliveries are at least once).
"""

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "K2E-Signature"
EVENT_ID_HEADER = "K2E-Event-Id"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, at: int | None = None) -> str:
    """The header's value for ``body`` signed at ``at`` (now by default)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
    """What a receiver does: the header's v1 matches and its t is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = signature(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))
