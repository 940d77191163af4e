"""The items of one JSON array read a piece at a time (Hour One's video list): the same items as
`json.loads`, wherever the pieces are cut, and broken answers refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vidfs.errors import InvalidRemoteData
from vidfs.http import json_stream
from vidfs.http.json_stream import JsonArrayReader, JsonArraySink, charset_of, json_array_items

DOCUMENTS = [
    "[]",
    " [ ] ",
    "[1]",
    "[123, 4.5e6, -7]",
    '[{"a": [1, 2]}, "x" ,3 ]\n',
    '[null, {"b": "]"}, true, false]',
    '[{"name": "Gr\\u00fc\\u00dfe \\"x\\", [y]"}, {"nested": {"deep": [[], {}]}}]',
]
BROKEN = ["", "{}", "[1,]", "[1 2]", "[1] x", "[", "[1", "[,1]", "[1,", '[{"a": 1]', "]", "[]]"]


def in_pieces(document: str, cuts: list[int]) -> list[Any]:
    reader = JsonArrayReader("t")
    items: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(document)], strict=True):
        items += reader.feed(document[start:end])
    return items + reader.close()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_items_are_the_array_wherever_the_text_is_cut(document: str) -> None:
    expected = json.loads(document)
    assert list(json_array_items(document, "t")) == expected
    for cut in range(len(document) + 1):  # every cut in two: numbers, strings, escapes cut anywhere
        assert in_pieces(document, [cut]) == expected, cut
    assert in_pieces(document, list(range(1, len(document)))) == expected  # a character at a time


@pytest.mark.parametrize("document", BROKEN)
def test_what_is_not_one_array_is_refused(document: str) -> None:
    with pytest.raises(InvalidRemoteData, match=r"^t: "):
        list(json_array_items(document, "t"))
    with pytest.raises(InvalidRemoteData):
        in_pieces(document, list(range(1, len(document))))


def test_a_body_is_decoded_a_piece_at_a_time_even_inside_a_character(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"id": str(n), "name": f"Grüße {n} 東京 🎬"} for n in range(200)]
    body = json.dumps(items, ensure_ascii=False).encode()
    for piece in (1, 2, 3, 7, 4096):  # pieces cut UTF-8 sequences of 2, 3 and 4 bytes
        monkeypatch.setattr(json_stream, "PIECE", piece)
        taken: list[Any] = []
        sink = JsonArraySink(taken.append, "t")
        sink.write(body)
        sink.close()
        assert taken == items, piece
    taken = []
    sink = JsonArraySink(taken.append, "t", encoding="utf-16-le")
    wide = json.dumps(items, ensure_ascii=False).encode("utf-16-le")
    for at in range(0, len(wide), 5):  # written as it arrives: in chunks that cut characters too
        sink.write(wide[at : at + 5])
    sink.close()
    assert taken == items


def test_the_charset_is_the_content_types() -> None:
    assert charset_of([(b"Content-Type", b"application/json; charset=ISO-8859-1")]) == "iso8859-1"
    assert charset_of([(b"content-type", b'application/json;charset="utf-16"')]) == "utf-16"
    assert charset_of([(b"content-type", b"application/json; charset=nonsense")]) == "utf-8"
    assert charset_of([(b"content-type", b"application/json")]) == "utf-8"
    assert charset_of([]) == "utf-8"


def test_items_come_out_before_the_array_ends() -> None:
    reader = JsonArrayReader("t")
    assert reader.feed('[{"a": 1}, {"b": 2}, {"c"') == [{"a": 1}, {"b": 2}]
    assert reader.feed(": 3}") == []  # held back: whole, but it ends where the text does
    assert reader.feed("]") + reader.close() == [{"c": 3}]


def test_an_item_cut_in_many_pieces_is_decoded_a_logarithmic_number_of_times() -> None:
    reader = JsonArrayReader("t")
    calls = 0
    decode = reader._decoder.raw_decode

    def counting(text: str, at: int) -> tuple[Any, int]:
        nonlocal calls
        calls += 1
        return decode(text, at)

    reader._decoder.raw_decode = counting  # type: ignore[method-assign]
    item = json.dumps({"text": "x" * 100_000})
    document = f"[{item}]"
    items: list[Any] = []
    for at in range(0, len(document), 100):
        items += reader.feed(document[at : at + 100])
    assert items + reader.close() == [json.loads(item)]
    assert calls <= 20  # 1,001 pieces: tried again only each time the waiting text doubled


def test_an_item_larger_than_the_bound_is_refused() -> None:
    reader = JsonArrayReader("t", largest_item=1000)
    reader.feed("[")
    with pytest.raises(InvalidRemoteData, match="not a JSON array"):
        for _ in range(100):
            reader.feed('{"a": "' + "y" * 100)
