"""What storage told of each video of one instance (`probes.py`'s answers), kept in three flat arrays.

An answer is a video's size, its ETag and the basis (the hash of the fingerprint) it holds for. Kept as a
dict of remote id → a 72-byte `bytes` each, 100,000 answers were 12.4 MiB (5.2 of dict, 7.2 of objects), and
those objects were made one at a time in the middle of a walk's 100,000 HEADs, each pinning a bit of the
heap around it after the HEADs were gone. Here they are:

- `_rows`, one bytearray of 33-byte rows: size, basis, the ETag's form, and its 16 bytes when it is the
  usual quoted lower-case MD5 hex (`"<32 hex digits>"`); other ETags are kept as text in `_texts`, by id;
- `_ids`, the remote id of each row: the video's own string (8 bytes a row, not a copy);
- `_index`, an open-addressing table of 4-byte row numbers (+1; 0 is empty) by the id's `hash()`, never
  more than half full, so that a lookup looks at one or two slots.

About 5 MiB at 100,000, in a few large blocks. A video keeps one row: a new answer (its file changed)
overwrites the row in place, and a forgotten one is marked dead (`_DEAD`) until it is learned again.

The snapshot keeps a table as it is, in chunks of CHUNK_ROWS rows (`Chunk`): their ids, their rows' bytes
as they are here, and their text ETags. A save writes only the chunks whose rows changed (a walk appends
rows, so mostly its last chunk), copied in the trio thread (`chunk`). A remount joins them with `load`, rows
and ids at once and the index sized once. Kept a SQLite row per answer (id, basis, size, ETag), the
answers of 100,000 AIPIX archives took 0.48 s to load, before a remount's first answer; 0.11 s in chunks.
"""

from __future__ import annotations

import re
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

_ROW = struct.Struct("<qQB16s")  # size, basis, the ETag's form, an MD5's 16 bytes (else zeros)
ROW_SIZE = _ROW.size
_FORM_AT = 16  # the form's byte in a row (after size and basis)
_NO_ETAG, _TEXT_ETAG, _MD5_ETAG, _DEAD = 0, 1, 2, 3
_NO_MD5 = bytes(16)
_MD5_HEX = re.compile(r'"[0-9a-f]{32}"')
BASIS_BITS = (1 << 64) - 1  # a basis read from a damaged snapshot may be any number: then it holds for none
_FIRST_SLOTS = 64


@dataclass(frozen=True, slots=True)
class Probe:
    """What storage told of one version of a video (`basis`: `probes.basis_of(Video.fingerprint)`)."""

    size: int
    etag: str | None
    basis: int = 0


def _etag_form(etag: str | None) -> tuple[int, bytes]:
    """How a row keeps `etag`: its form, and the MD5's 16 bytes when it is the usual quoted MD5 hex."""
    if etag is None:
        return _NO_ETAG, _NO_MD5
    if _MD5_HEX.fullmatch(etag):
        return _MD5_ETAG, bytes.fromhex(etag[1:-1])
    return _TEXT_ETAG, _NO_MD5


CHUNK_ROWS = 4096  # rows to a chunk of the snapshot (about 135 KiB of rows and 160 KiB of ids)


def chunk_of(row: int) -> int:
    """The number of the chunk that holds `row`."""
    return row // CHUNK_ROWS


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows `number * CHUNK_ROWS` onwards of a table (up to CHUNK_ROWS of them), as the snapshot keeps them:
    their ids, their rows' bytes, and the text ETags among them by id."""

    number: int
    ids: list[str]
    rows: bytes
    texts: dict[str, str]


class AnswerTable:
    """One instance's probe answers by remote id (see the module's essay)."""

    __slots__ = ("_ids", "_index", "_rows", "_texts", "live")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._rows = bytearray()
        self._index = array("i", bytes(4 * _FIRST_SLOTS))
        self._texts: dict[str, str] = {}
        self.live = 0  # rows not dead

    def __len__(self) -> int:
        return self.live

    # --------------------------------------------------------------------------------- reading
    def get(self, remote_id: str, basis: int | None = None) -> Probe | None:
        """The answer for `remote_id`, if it holds for `basis` (None: whichever it holds for)."""
        row = self._find(remote_id)[0]
        return None if row < 0 else self._probe(row, basis)

    def sizes(self, wanted: Iterable[tuple[str, int] | None], missing: int) -> array[int]:
        """The size of the answer for each (remote id, basis) in `wanted` that holds for that basis (`get`'s,
        no `Probe` made), `missing` for the others and for None: a directory's build reads all of its videos'
        at once (a call each, with `_find`'s lookup, was 0.28 s of a 0.75 s build of 100,000 AIPIX archives
        here; the lookup is written out in this loop)."""
        index, ids, rows, unpack = self._index, self._ids, self._rows, _ROW.unpack_from
        mask, width = len(index) - 1, _ROW.size
        found = array("q")
        append = found.append
        for item in wanted:
            size = missing
            if item is not None:
                remote_id, basis = item
                slot = hash(remote_id) & mask
                for _ in range(len(index)):  # at most half full: an empty slot comes within a few
                    row = index[slot] - 1
                    if row < 0:
                        break
                    if ids[row] == remote_id:
                        size, held, form, _ = unpack(rows, row * width)
                        if form == _DEAD or held != basis:
                            size = missing
                        break
                    slot = (slot + 1) & mask
            append(size)
        return found

    def _probe(self, row: int, basis: int | None) -> Probe | None:
        size, held, form, md5 = _ROW.unpack_from(self._rows, row * _ROW.size)
        if form == _DEAD or (basis is not None and held != basis):
            return None
        if form == _MD5_ETAG:
            return Probe(size, f'"{md5.hex()}"', held)
        etag = self._texts.get(self._ids[row]) if form == _TEXT_ETAG else None
        return Probe(size, etag, held)

    def at(self, row: int) -> tuple[str, Probe] | None:
        """The id and answer of `row` (a number `put` returned), None if it was forgotten."""
        probe = self._probe(row, None)
        return None if probe is None else (self._ids[row], probe)

    def rows(self) -> array[int]:
        """The number of every live row (for `Answers`)."""
        return array("i", (row for row in range(len(self._ids)) if self._form(row) != _DEAD))

    def _form(self, row: int) -> int:
        return self._rows[row * _ROW.size + _FORM_AT]

    def _find(self, remote_id: str) -> tuple[int, int]:
        """(the row of `remote_id` or -1, the slot of the index that holds it or would)."""
        index, ids = self._index, self._ids
        mask = len(index) - 1
        slot = hash(remote_id) & mask
        for _ in range(len(index)):  # at most half full: an empty slot comes within a few
            row = index[slot] - 1
            if row < 0 or ids[row] == remote_id:
                return row, slot
            slot = (slot + 1) & mask
        raise AssertionError("a full index of probe answers")  # never: it grows at half full

    # --------------------------------------------------------------------------------- writing
    def put(self, remote_id: str, probe: Probe) -> int:
        """Keep `probe` (its basis set) as the answer for `remote_id`, and return its row number; ValueError
        for a size beyond 64 bits."""
        etag = probe.etag
        form, md5 = _etag_form(etag)
        try:
            packed = _ROW.pack(probe.size, probe.basis & BASIS_BITS, form, md5)
        except struct.error as exc:
            raise ValueError(f"a size of {probe.size} bytes") from exc
        row, slot = self._find(remote_id)
        if row < 0:
            row = len(self._ids)
            self._ids.append(remote_id)
            self._rows += packed
            self._index[slot] = row + 1
            self.live += 1
            if 2 * len(self._ids) > len(self._index):
                self._grow()
        else:
            self.live += self._form(row) == _DEAD
            offset = row * _ROW.size
            self._rows[offset : offset + _ROW.size] = packed
        if form == _TEXT_ETAG:
            self._texts[remote_id] = etag  # type: ignore[assignment]  # not None: form says so
        else:
            self._texts.pop(remote_id, None)
        return row

    # ------------------------------------------------------------------------------- snapshot
    def chunk_count(self) -> int:
        return -(-len(self._ids) // CHUNK_ROWS)

    def chunk(self, number: int) -> Chunk:
        """A copy of rows `number * CHUNK_ROWS` onwards (call in the trio thread: the writer's own)."""
        first, end = number * CHUNK_ROWS, (number + 1) * CHUNK_ROWS
        ids = self._ids[first:end]
        texts = self._texts
        held = {rid: texts[rid] for rid in ids if rid in texts} if texts else {}
        return Chunk(number, ids, bytes(self._rows[first * _ROW.size : end * _ROW.size]), held)

    def load(self, chunks: Iterable[Chunk]) -> bool:
        """Fill this empty table with a snapshot's chunks, in one go: rows joined once, the index sized once
        (see the module's essay). A chunk whose rows and ids do not line up is left out: its videos' sizes
        are asked again (`snapshot.py` leaves out a chunk it cannot decode). An id given twice keeps its
        last answer, as `put` would. Returns whether the rows kept their numbers, chunk by chunk (none left
        out, every chunk but the last full): else the snapshot writer must write them all again, not only
        the chunks that change."""
        if self._ids:
            raise ValueError("load() fills an empty table")
        ids, texts, numbered = self._ids, self._texts, True
        parts: list[bytes] = []
        for chunk in chunks:
            if len(ids) != chunk.number * CHUNK_ROWS or len(chunk.ids) > CHUNK_ROWS:
                numbered = False  # one before was left out (or is not whole), or this one is too long
            if len(chunk.rows) != len(chunk.ids) * _ROW.size:
                numbered = False
                continue
            parts.append(chunk.rows)
            ids.extend(chunk.ids)
            # An id given twice with a text ETag first and an MD5 last keeps the text beside its row,
            # unread: a row reads its text only when its form says it has one.
            texts.update(chunk.texts)
        self._rows = bytearray(b"".join(parts))
        del parts
        self.live = len(ids) - self._rows[_FORM_AT :: _ROW.size].count(_DEAD)
        slots = _FIRST_SLOTS
        while slots < 2 * len(ids):
            slots *= 2
        self._reindex(slots)
        return numbered

    def setdefault(self, remote_id: str, probe: Probe) -> None:
        """`put`, unless `remote_id` has a live answer already (one learned since a snapshot was read)."""
        row = self._find(remote_id)[0]
        if row < 0 or self._form(row) == _DEAD:
            self.put(remote_id, probe)

    def forget(self, remote_id: str, basis: int) -> bool:
        """Mark the answer for `remote_id` dead if it holds for `basis`; whether it did."""
        row = self._find(remote_id)[0]
        if row < 0 or self._probe(row, basis) is None:
            return False
        self._rows[row * _ROW.size + _FORM_AT] = _DEAD
        self._texts.pop(remote_id, None)
        self.live -= 1
        return True

    def _grow(self) -> None:
        self._reindex(2 * len(self._index))

    def _reindex(self, slots: int) -> None:
        """The index made anew with `slots` slots (a power of two, at least twice the rows). A live row whose
        id an earlier row has (only `load` makes those) gives that row its answer and is marked dead; once
        dead, it is left out of the index again when the index grows."""
        self._index = index = array("i", bytes(4 * slots))
        ids, rows, width, mask = self._ids, self._rows, _ROW.size, slots - 1
        for row, remote_id in enumerate(ids):
            slot = hash(remote_id) & mask
            for _ in range(slots):  # at most half full: an empty slot comes within a few
                held = index[slot] - 1
                if held < 0:
                    index[slot] = row + 1
                    break
                if ids[held] == remote_id:
                    if rows[row * width + _FORM_AT] == _DEAD:
                        break
                    rows[held * width : (held + 1) * width] = rows[row * width : (row + 1) * width]
                    rows[row * width + _FORM_AT] = _DEAD
                    self.live -= 1
                    break
                slot = (slot + 1) & mask


__all__ = ["BASIS_BITS", "CHUNK_ROWS", "ROW_SIZE", "AnswerTable", "Chunk", "Probe", "chunk_of"]
