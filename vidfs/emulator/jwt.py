"""HS256 JSON Web Tokens for the emulators (Pixop's JWT, AIPIX's Bearer token, VALT's signed URLs).

Only what an emulator needs: sign claims, and read them back when the signature holds. Expiry, `nbf` and
vendor-specific claims are each emulator's business (they answer with their vendor's error bodies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: Mapping[str, Any], secret: bytes, *, header: Mapping[str, Any] | None = None) -> str:
    head = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = f"{_b64url(json.dumps(head).encode())}.{_b64url(json.dumps(dict(claims)).encode())}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def decode(token: str, secret: bytes) -> dict[str, Any] | None:
    """The claims of an HS256 token signed with `secret`; None when it is malformed or forged."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return None
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    return claims if hmac.compare_digest(expected, signature) else None
