"""Reading credentials off a request, the same way for every emulated vendor (their answers differ).

Each helper returns what it found or None, or raises `Malformed` for a header that names the scheme but
cannot be read; the vendor turns both into its own error body.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from vidfs.emulator.request import Request


class Malformed(ValueError):
    """An Authorization header of the right scheme that cannot be decoded."""


def _authorization(req: Request) -> tuple[str, str]:
    scheme, _, value = (req.headers.get("Authorization") or "").strip().partition(" ")
    return scheme.lower(), value.strip()


def bearer_token(req: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (None: no such header, or an empty token)."""
    scheme, value = _authorization(req)
    return value if scheme == "bearer" and value else None


def basic_raw(req: Request) -> bytes | None:
    """The decoded ``user:password`` bytes of HTTP Basic (None: another scheme or none)."""
    scheme, value = _authorization(req)
    if scheme != "basic":
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise Malformed("malformed HTTP Basic credentials") from None


def basic_credentials(req: Request) -> tuple[str, str] | None:
    """(user, password) of HTTP Basic (None: another scheme or none)."""
    raw = basic_raw(req)
    if raw is None:
        return None
    try:
        user, sep, password = raw.decode("utf-8").partition(":")
    except UnicodeDecodeError:
        raise Malformed("malformed HTTP Basic credentials") from None
    if not sep:
        raise Malformed("malformed HTTP Basic credentials")
    return user, password


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())
