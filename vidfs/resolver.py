"""URL leases: where each video's bytes are, until when.

A provider's `resolve()` can be costly (an API call, a login) and its answer expires (signed URLs, JWTs).
The resolver keeps one lease per video, shared by every reader, and:
- renews it *ahead* of expiry (a margin of 20 % of its lifetime, at most 60 s) so a long read never starts
  a request with a URL about to die;
- coalesces concurrent resolutions of one video into one call (single flight);
- after storage refuses a lease (401/403/410), asks the provider once for a fresh one, passing the refused
  lease so the provider can renew its token or signature; a second refusal is the caller's error.

Expiry comes from the provider (it knows its vendor), and `expiry_from_url()` helps it read the usual
signature parameters: a JWT's `exp`, `X-Amz-Date`+`X-Amz-Expires`, `X-Goog-Date`+`X-Goog-Expires`,
`Expires=<epoch>`, Azure `se=`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import trio

from vidfs.model import StreamLease, Video
from vidfs.providers.base import Provider
from vidfs.stats import Stats

log = logging.getLogger("vidfs.resolver")

MAX_MARGIN = 60.0


def jwt_claims(token: str) -> dict[str, object]:
    """The claims of a JWT, without checking its signature (we only want `exp`)."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> float | None:
    exp = jwt_claims(token).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _amz_time(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def expiry_from_url(url: str) -> float | None:
    """When a signed URL stops working, from its query parameters; None if it does not say."""
    params = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    for key in ("x-amz-expires", "x-goog-expires"):
        date_key = key.replace("expires", "date")
        if key in params and date_key in params:
            start = _amz_time(params[date_key])
            try:
                if start is not None:
                    return start + float(params[key])
            except ValueError:
                pass
    if "expires" in params:
        try:
            return float(params["expires"])
        except ValueError:
            pass
    if "se" in params:  # Azure SAS
        try:
            return datetime.fromisoformat(params["se"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    for key in ("access_token", "token", "jwt", "exp"):
        if key in params:
            if key == "exp":
                try:
                    return float(params[key])
                except ValueError:
                    continue
            expiry = jwt_expiry(params[key])
            if expiry is not None:
                return expiry
    return None


def still_fresh(obtained_at: float, expires_at: float | None, now: float) -> bool:
    """Whether something that expires (a URL, a token) is still worth using: not within the last 20 % of
    its lifetime (at most a minute before it ends). Unknown expiry: used until refused."""
    if expires_at is None:
        return True
    margin = min(MAX_MARGIN, 0.2 * max(0.0, expires_at - obtained_at))
    return now < expires_at - margin


@dataclass
class _Entry:
    lease: StreamLease
    obtained_at: float

    def fresh(self, now: float) -> bool:
        return still_fresh(self.obtained_at, self.lease.expires_at, now)


class Resolver:
    """One lease per (provider instance, video id), renewed ahead of expiry, resolved once at a time."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], trio.Lock] = {}

    def _lock(self, key: tuple[str, str]) -> trio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = trio.Lock()
        return lock

    async def lease(self, instance: str, provider: Provider, video: Video) -> StreamLease:
        key = (instance, video.remote_id)
        entry = self._entries.get(key)
        if entry is not None and entry.fresh(time.time()):
            return entry.lease
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is not None and entry.fresh(time.time()):
                return entry.lease
            previous = entry.lease if entry is not None else None
            lease = await provider.resolve(video)
            self._stats.incr("leases.resolved" if previous is None else "leases.renewed")
            self._entries[key] = _Entry(lease, time.time())
            return lease

    async def refused(
        self, instance: str, provider: Provider, video: Video, lease: StreamLease
    ) -> StreamLease:
        """Storage refused `lease`: get a fresh one (unless another reader already did)."""
        key = (instance, video.remote_id)
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is not None and entry.lease is not lease and entry.fresh(time.time()):
                return entry.lease
            log.info("storage refused the download URL of %s/%s; resolving again", instance, video.remote_id)
            fresh = await provider.resolve(video, previous=lease)
            self._stats.incr("leases.refreshed_after_refusal")
            self._entries[key] = _Entry(fresh, time.time())
            return fresh

    def forget(self, instance: str, remote_id: str) -> None:
        self._entries.pop((instance, remote_id), None)

    def statistics(self) -> dict[str, int]:
        return {"leases": len(self._entries)}
