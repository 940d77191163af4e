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
A remount fills its tables from the snapshot with `load`, all rows at once and the index sized once.

The snapshot writer reads rows from its thread while the trio thread adds and overwrites others (`Answers`):
every write of a row and every read of one is a single C call made with the GIL held (a slice assignment,
`unpack_from`), so a row is read whole, as it was before or after a write, and no read holds the buffer
while the bytearray grows.
"""

from __future__ import annotations

import re
import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_ROW = struct.Struct("<qQB16s")  # size, basis, the ETag's form, an MD5's 16 bytes (else zeros)
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

    def size(self, remote_id: str, basis: int) -> int | None:
        """`get(...).size` without making the `Probe` (a directory's build reads them all)."""
        row = self._find(remote_id)[0]
        if row < 0:
            return None
        size, held, form, _ = _ROW.unpack_from(self._rows, row * _ROW.size)
        return int(size) if form != _DEAD and held == basis else None

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

    def load(self, answers: Iterable[tuple[str, int, str | None, int]]) -> None:
        """`put` of every (remote id, size, ETag, basis) into this empty table, in one go: a remount reads
        100,000 of them from the snapshot before it mounts. No `Probe` is made, the rows are joined once and
        the index is sized once (one at a time, those were 0.3-0.5 s of a 1.5-1.8 s snapshot load of
        100,000 AIPIX archives here, with 12 rebuilds of the index). An id given twice keeps its last
        answer, as `put` would; one with a size beyond 64 bits is left out (asked again)."""
        if self._ids:
            raise ValueError("load() fills an empty table")
        ids, parts, texts, pack = self._ids, [], self._texts, _ROW.pack
        for remote_id, size, etag, basis in answers:
            form, md5 = _etag_form(etag)
            try:
                parts.append(pack(size, basis & BASIS_BITS, form, md5))
            except struct.error:
                continue
            ids.append(remote_id)
            if form == _TEXT_ETAG:
                texts[remote_id] = etag  # type: ignore[assignment]  # not None: form says so
            elif texts and remote_id in texts:  # an earlier answer for this id had one
                del texts[remote_id]
        self._rows = bytearray(b"".join(parts))
        del parts
        self.live = len(ids)
        slots = _FIRST_SLOTS
        while slots < 2 * len(ids):
            slots *= 2
        self._reindex(slots)

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


class Answers:
    """Some answers of one instance, for the snapshot writer: the rows to write, read (and each answer made)
    as they are iterated, in its thread (see the module's essay). A dict keyed by (id, fingerprint) tuples,
    and a list of ids or of answers, were each some MiB at the end of a walk of 100,000 videos, when its
    last answers are saved; 4 bytes a row here."""

    __slots__ = ("_rows", "_table")

    def __init__(self, table: AnswerTable, rows: array[int]) -> None:
        self._table, self._rows = table, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[tuple[str, Probe]]:
        for row in self._rows:
            answer = self._table.at(row)
            if answer is not None:  # forgotten since: not written
                yield answer


__all__ = ["BASIS_BITS", "AnswerTable", "Answers", "Probe"]
