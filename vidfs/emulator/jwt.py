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
import secrets
import threading
import time
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


class Mint:
    """Issues a vendor's HS256 tokens: a per-process secret, a lifetime, and a generation that, bumped
    (`expire_all`), makes every token issued so far stale. Counts what it issued (``issued``)."""

    def __init__(self) -> None:
        self.secret = secrets.token_bytes(32)
        self.generation = 0
        self.issued = 0
        self._lock = threading.Lock()

    def issue(self, claims: Mapping[str, Any], lifetime: int, *, not_before: bool = False) -> str:
        now = int(time.time())
        with self._lock:
            self.issued += 1
            payload = {**claims, "iat": now, **({"nbf": now} if not_before else {}), "exp": now + lifetime}
            payload["jti"] = f"{self.issued}-{secrets.token_hex(4)}"
            payload["gen"] = self.generation
        return encode(payload, self.secret)

    def read(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this mint signed (current or not); None when malformed or forged."""
        return decode(token, self.secret)

    def current(self, claims: Mapping[str, Any]) -> bool:
        """Not expired, and issued in the current generation."""
        with self._lock:
            generation = self.generation
        return time.time() < float(claims.get("exp", 0)) and claims.get("gen") == generation

    def expire_all(self) -> None:
        with self._lock:
            self.generation += 1
