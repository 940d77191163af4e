"""What the fleet puts in Redis, sealed: key names that are hashes, block values with an HMAC, listings
encrypted.

Three keys are derived from `[cache.shared] secret` with HKDF-SHA256 (the `cryptography` package), one
per use, so no key serves two purposes:

- the *name* key: every Redis key is a keyed hash (HMAC-SHA256) of what it stands for (provider instance
  identity, remote id, ETag, size, block size, group; or the folder id of a listing). A scan of the
  keyspace shows hex digits and small block numbers, never a name, path, id or URL, and whoever does not
  hold the secret cannot even confirm a guess. Two fleets with different secrets never meet.
- the *MAC* key: a block value is ``header + data + HMAC-SHA256(key name + header + data)``. The header
  is ``b"vfb1"`` (format), the block index, the data length and the file size. Covering the Redis key name
  means a value copied from another key (another block, another file, another fleet) fails, as does a
  flipped bit, a truncated value or a header that does not match what the reader expects. Such a value is
  a miss, never served. HMAC-SHA256 costs 0.84 CPU s per GB here (SHA-NI), blake2b keyed 1.8.
- the *listing* key: a listing holds file names, and no file name may be stored in Redis, so a listing
  value is AES-256-GCM ciphertext (a fresh 96-bit nonce per value, the Redis key name as associated data,
  so it cannot be moved to another directory's key either) of the compressed JSON the snapshot also
  writes (`vidfs.catalog.snapshot_codec.listing_to_json`), plus the wall-clock time of the fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vidfs.catalog.snapshot_codec import listing_from_json, listing_to_json
from vidfs.model import Listing

BLOCK_MAGIC = b"vfb1"
BLOCK_HEADER = struct.Struct(">4sQIQ")  # format, block index, data length, file size
TAG_SIZE = 32
LISTING_MAGIC = b"vfl1"
NONCE_SIZE = 12


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"vidfs fleet", info=label).derive(secret)


@dataclass(frozen=True, slots=True, repr=False)
class FleetKeys:
    """The three keys derived from the fleet's secret (never shown: no repr)."""

    names: bytes
    mac: bytes
    listing: bytes

    @classmethod
    def from_secret(cls, secret: str) -> FleetKeys:
        raw = secret.encode("utf-8", "surrogatepass")
        return cls(_derive(raw, b"names v1"), _derive(raw, b"mac v1"), _derive(raw, b"listing v1"))

    def __repr__(self) -> str:
        return "FleetKeys(…)"

    def name(self, *parts: object) -> str:
        """A keyed hash of `parts` (32 hex digits): what Redis keys are made of."""
        text = json.dumps([str(part) for part in parts], ensure_ascii=False).encode("utf-8", "surrogatepass")
        return hmac.new(self.names, text, hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------------------------------ blocks
    def seal_block(self, key: bytes, index: int, file_size: int, data: bytes) -> bytes:
        header = BLOCK_HEADER.pack(BLOCK_MAGIC, index, len(data), file_size)
        mac = hmac.new(self.mac, key, hashlib.sha256)
        mac.update(header)
        mac.update(data)
        return b"".join((header, data, mac.digest()))

    def open_block(self, key: bytes, index: int, file_size: int, length: int, value: bytes) -> bytes | None:
        """The block's data when `value` is exactly what `seal_block` made for this key, index, file size and
        length; None for anything else (the caller counts it and deletes it)."""
        if len(value) != BLOCK_HEADER.size + length + TAG_SIZE:
            return None
        view = memoryview(value)
        magic, got_index, got_length, got_size = BLOCK_HEADER.unpack_from(view)
        if (magic, got_index, got_length, got_size) != (BLOCK_MAGIC, index, length, file_size):
            return None
        end = BLOCK_HEADER.size + length
        mac = hmac.new(self.mac, key, hashlib.sha256)
        mac.update(view[:end])
        if not hmac.compare_digest(mac.digest(), view[end:]):
            return None
        return bytes(view[BLOCK_HEADER.size : end])

    # ---------------------------------------------------------------------------------------- listings
    def seal_listing(self, key: bytes, folder_id: str, listing: Listing, fetched_at: float) -> bytes:
        document = {"at": fetched_at, "listing": listing_to_json(folder_id, listing)}
        plain = zlib.compress(json.dumps(document, separators=(",", ":")).encode("utf-8", "surrogatepass"))
        nonce = os.urandom(NONCE_SIZE)
        return LISTING_MAGIC + nonce + AESGCM(self.listing).encrypt(nonce, plain, key)

    def open_listing(self, key: bytes, folder_id: str, value: bytes) -> tuple[Listing, float] | None:
        """(listing, wall-clock time of its fetch), or None for a value that is not ours for this key."""
        if not value.startswith(LISTING_MAGIC) or len(value) < len(LISTING_MAGIC) + NONCE_SIZE + 16:
            return None
        nonce = value[len(LISTING_MAGIC) : len(LISTING_MAGIC) + NONCE_SIZE]
        try:
            plain = AESGCM(self.listing).decrypt(nonce, value[len(LISTING_MAGIC) + NONCE_SIZE :], key)
            document: Any = json.loads(zlib.decompress(plain))
            folder, listing = listing_from_json(document["listing"])
            fetched_at = float(document["at"])
        except (InvalidTag, ValueError, KeyError, TypeError, zlib.error):
            return None
        if folder != folder_id:
            return None
        return listing, min(fetched_at, time.time())
