"""The items of one JSON array, read a piece of text at a time.

Hour One lists every video of an account in one JSON array: at 100,000 videos the answer is 105 MB. Decoded
at once with `json.loads` it held every item as Python objects (most of a 600 MiB peak); decoded as one
string it still held the text beside the body. `JsonArrayReader` takes the text in pieces, as a body is
decoded (or received), and gives back each item as soon as it is whole, so a caller that keeps a little of
each item never holds more than a piece and the item being read.

Each item is decoded by the standard library's `json.JSONDecoder.raw_decode`; this module only finds where
items start and what separates them (`[`, `,`, `]`, whitespace). An item cut by the end of a piece fails to
decode and is tried again when more text came: at most once each time the text waiting has doubled, so an
item read in many small pieces still costs linear time. An item that ends exactly at the end of a piece is
held back too, as a number or a literal could go on in the next piece (`12` then `3`), and so is a
number followed by what could start its fraction or exponent (`4.` then `5`). An item larger than
`largest_item` characters, or text that never becomes a whole item, is `InvalidRemoteData`, as is anything
but whitespace after the closing `]`.
"""

from __future__ import annotations

import codecs
import enum
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vidfs.errors import InvalidRemoteData

LARGEST_ITEM = 16 << 20  # characters: a vendor's JSON object is kilobytes; this is a broken answer
PIECE = 1 << 20  # bytes of a body decoded to text at a time

_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_GOES_ON = frozenset("0123456789.eE+-")


class _Expect(enum.Enum):
    OPEN = "["
    FIRST = "an item or ]"
    ITEM = "an item"
    NEXT = ", or ]"
    END = "nothing more"


class JsonArrayReader:
    """Feed text with `feed`, end with `close`; each returns the items that became whole."""

    def __init__(self, what: str, *, largest_item: int = LARGEST_ITEM) -> None:
        self._what = what
        self._largest = largest_item
        self._decoder = json.JSONDecoder()
        self._text = ""
        self._retry_at = 0  # length of waiting text at which a cut item is tried again
        self._expect = _Expect.OPEN

    def feed(self, text: str) -> list[Any]:
        self._text += text
        return self._read(final=False)

    def close(self) -> list[Any]:
        items = self._read(final=True)
        if self._expect is not _Expect.END:
            raise self._invalid("the answer ends before its JSON array does")
        return items

    def _read(self, *, final: bool) -> list[Any]:
        items: list[Any] = []
        text, at = self._text, 0
        while True:  # bounded: each turn consumes text or leaves
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]  # `*`: it always matches
            if at == len(text):
                break
            expect, char = self._expect, text[at]
            if expect is _Expect.OPEN and char == "[":
                self._expect, at = _Expect.FIRST, at + 1
            elif char == "]" and expect in (_Expect.FIRST, _Expect.NEXT):
                self._expect, at = _Expect.END, at + 1
            elif expect is _Expect.NEXT and char == ",":
                self._expect, at = _Expect.ITEM, at + 1
            elif expect in (_Expect.FIRST, _Expect.ITEM):
                if not final and len(text) - at < self._retry_at:
                    break  # this item was cut: wait until the text waiting has doubled
                try:
                    item, end = self._decoder.raw_decode(text, at)
                except ValueError:
                    item, end = None, -1
                if end < 0 or (not final and _may_go_on(item, text, end)):
                    if final or len(text) - at > self._largest:
                        raise self._invalid("the answer is not a JSON array") from None
                    self._retry_at = 2 * (len(text) - at)
                    break
                items.append(item)
                self._expect, at, self._retry_at = _Expect.NEXT, end, 0
            else:
                raise self._invalid(f"expected {expect.value} in the JSON array, not {char!r}")
        self._text = text[at:]
        return items

    def _invalid(self, why: str) -> InvalidRemoteData:
        return InvalidRemoteData(f"{self._what}: {why}")


def _may_go_on(item: Any, text: str, end: int) -> bool:
    """Whether the next piece could still change `item`, decoded up to `end` of `text`: it ends where the
    text does, or it is a number cut in its fraction or exponent (`4.` then `5`, `4e` then `2`)."""
    return end == len(text) or (isinstance(item, int | float) and text[end] in _NUMBER_GOES_ON)


def json_array_items(text: str, what: str) -> Iterator[Any]:
    """The items of the JSON array `text` (whole), one at a time."""
    reader = JsonArrayReader(what)
    yield from reader.feed(text)
    yield from reader.close()


class JsonArraySink:
    """A body sink (`vidfs.http.lean.BodySink`) for an answer that is one JSON array: bytes written to it
    are decoded to text (undecodable bytes replaced) and each whole item is given to `take` at once, so
    neither the body nor its text is ever held whole. `close` when the body has ended."""

    def __init__(self, take: Callable[[Any], object], what: str, *, encoding: str = "utf-8") -> None:
        self._take = take
        self._reader = JsonArrayReader(what)
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def write(self, data: bytes, /) -> None:
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            for item in self._reader.feed(self._decoder.decode(view[start : start + PIECE])):
                self._take(item)

    def close(self) -> None:
        for item in self._reader.feed(self._decoder.decode(b"", final=True)) + self._reader.close():
            self._take(item)


def charset_of(fields: Iterable[tuple[bytes, bytes]], default: str = "utf-8") -> str:
    """The charset an answer's Content-Type names (one Python knows), else `default`."""
    for name, value in fields:
        if name.lower() == b"content-type":
            for parameter in value.decode("latin-1").split(";")[1:]:
                key, _, charset = parameter.partition("=")
                if key.strip().lower() == "charset":
                    try:
                        return codecs.lookup(charset.strip().strip('"')).name
                    except LookupError:
                        return default
    return default
