"""Texts kept deflated (`vidfs.model.TextPacker`, `frozen_extra`): whatever their length, they read back as
they were given, and long xattr values are really kept packed."""

from __future__ import annotations

import random
import string

from vidfs.model import PACK_AT, FrozenMap, TextPacker, frozen_extra


def _text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + "/:?=&-é€😀") for _ in range(length))


def test_texts_of_any_length_read_back_as_given() -> None:
    rng = random.Random(7)
    packer = TextPacker()
    dictionary = "https://storage.example/videos/" + _text(rng, 300)
    # Longer than the 4 KiB window, with and without the dictionary's text in them, empty, odd characters.
    texts = [
        dictionary,
        dictionary.replace("videos", "clips"),
        _text(rng, 20_000),
        dictionary * 30,
        "",
        "a lone surrogate \udc80 and a NUL \0 too",
    ]
    packed = [packer.pack(text) for text in texts]
    assert [packer.unpack(data) for data in packed] == texts
    assert len(packed[1]) < len(texts[1]) // 4  # the dictionary did its work on a text like it


def test_long_xattr_values_are_kept_packed_and_read_back() -> None:
    rng = random.Random(11)
    first = {"status": "ready", "player": "https://player.example/v/" + _text(rng, 80), "n": 1}
    second = {"status": "ready", "player": "https://player.example/v/" + _text(rng, 5_000), "n": 2}
    maps = [frozen_extra(first), frozen_extra(second)]
    for values, made in zip((first, second), maps, strict=True):
        assert isinstance(made, FrozenMap)
        assert dict(made) == {key: str(value) for key, value in values.items()}
        assert sum(len(value) for value in made.values()) >= PACK_AT
        assert isinstance(made._values, bytes)  # kept deflated, not as the text
