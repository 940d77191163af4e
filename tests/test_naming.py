"""Display names: sanitising, length limits, extensions, duplicates decided by id."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest

from vidfs.catalog.naming import MAX_NAME_BYTES, extension_for, file_name, name_entries, sanitize, split_ext


def nbytes(name: str) -> int:
    return len(name.encode("utf-8"))


# --------------------------------------------------------------------------------------------- sanitize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/b", "a∕b"),
        ("/", "∕"),
        ("a\x00b", "ab"),
        ("a\x01\x1f\x7fb", "ab"),
        ("a\x80\x9fb", "ab"),  # C1 controls
        ("line1\nline2", "line1 line2"),
        ("tab\there", "tab here"),
        ("  padded  ", "padded"),
        ("\x00 \x00", "fallback-id"),
        ("", "fallback-id"),
        ("   ", "fallback-id"),
        (".", "_."),
        ("..", "_.."),
        ("...", "_..."),
        (".hidden", "_.hidden"),
        (" .", "_."),
        ("_.", "_."),
        ("a.b", "a.b"),
        ("caf\u00e9", "caf\u00e9"),
        ("bad\ud800surrogate", "bad\ufffdsurrogate"),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    assert sanitize(raw, fallback="fallback-id") == expected


def test_sanitize_fallback_is_sanitized_too() -> None:
    assert sanitize("", fallback="a/b\x00") == "a∕b"
    assert sanitize("", fallback="") == "_"
    assert sanitize("", fallback=".x") == "_.x"


@pytest.mark.parametrize(
    "raw", ["a" * 300, "a" * 300 + ".mp4", "é" * 200 + ".mkv", "日本" * 100, "😀" * 80 + ".webm"]
)
def test_long_names_fit_in_255_bytes(raw: str) -> None:
    name = sanitize(raw, fallback="x")
    assert nbytes(name) <= MAX_NAME_BYTES
    assert nbytes(name) > MAX_NAME_BYTES - 4  # cut as late as possible (a character is at most 4 bytes)
    name.encode("utf-8").decode("utf-8")  # cut at a character boundary
    _, ext = split_ext(raw)
    assert name.endswith(ext)
    assert raw.startswith(name[: -len(ext)] if ext else name)


def test_long_name_keeps_extension_up_to_16_chars() -> None:
    ext = ".abcdefghijklmno"  # 16 characters with the dot
    name = sanitize("x" * 300 + ext, fallback="x")
    assert name.endswith(ext) and nbytes(name) == 255
    too_long = ".abcdefghijklmnop"  # 17: not an extension, simply cut
    name = sanitize("x" * 300 + too_long, fallback="x")
    assert name == "x" * 255


def test_exactly_255_bytes_is_untouched() -> None:
    raw = "a" * 251 + ".mp4"
    assert sanitize(raw, fallback="x") == raw


def test_long_multibyte_name_with_extension() -> None:
    raw = "ж" * 200 + ".mp4"  # 404 bytes
    name = sanitize(raw, fallback="x")
    assert name == "ж" * 125 + ".mp4"
    assert nbytes(name) == 254


def test_long_name_does_not_end_in_space_before_extension() -> None:
    raw = "a" * 250 + " " + "b" * 20 + ".mp4"
    name = sanitize(raw, fallback="x")
    assert name == "a" * 250 + ".mp4"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("clip.mp4", ("clip", ".mp4")),
        ("clip", ("clip", "")),
        (".mp4", (".mp4", "")),
        ("Vol. 2", ("Vol. 2", "")),
        ("2024.01", ("2024.01", "")),  # digits only: not an extension
        ("a.tar.gz", ("a.tar", ".gz")),
        ("x.m2ts", ("x", ".m2ts")),
    ],
)
def test_split_ext(name: str, parts: tuple[str, str]) -> None:
    assert split_ext(name) == parts


def _split_by_regex(name: str) -> tuple[str, str]:
    """The rule as a regex (how `split_ext` first found it): `.` + 1-15 ASCII letters/digits at the end,
    at least one letter, a non-empty stem."""
    match = re.search(r"\.[A-Za-z0-9]{1,15}\Z", name)
    if match is None or match.start() == 0 or not any(c.isalpha() for c in match.group()):
        return name, ""
    return name[: match.start()], match.group()


def test_split_ext_is_the_regex_rule() -> None:
    rng = random.Random(20261203)
    alphabet = "aZ09._ é٣ⅷ-"  # ASCII letters and digits, dots, and non-ASCII letters and digits
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(20_000)]
    names += ["a." + "x" * 15, "a." + "x" * 16, "a.é", "a.٣", "a.ⅷ", "..mp4", "a..", "a.", "."]
    assert [split_ext(name) for name in names] == [_split_by_regex(name) for name in names]


# --------------------------------------------------------------------------------------------- extensions


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("video/mp4", ".mp4"),
        ("video/quicktime", ".mov"),
        ("video/x-matroska", ".mkv"),
        ("video/webm", ".webm"),
        ("video/mp2t", ".ts"),
        ("video/x-msvideo", ".avi"),
        ("application/octet-stream", ""),
        ("VIDEO/MP4; codecs=avc1", ".mp4"),
        ("text/html", ""),
        (None, ""),
        ("", ""),
    ],
)
def test_extension_for(content_type: str | None, ext: str) -> None:
    assert extension_for(content_type) == ext


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        ("clip", "video/mp4", "clip.mp4"),
        ("clip", "video/quicktime", "clip.mov"),
        ("clip", "video/x-matroska", "clip.mkv"),
        ("clip", "video/webm", "clip.webm"),
        ("clip", "video/mp2t", "clip.ts"),
        ("clip", "video/x-msvideo", "clip.avi"),
        ("clip", "application/octet-stream", "clip"),
        ("clip", None, "clip"),
        ("clip.mp4", "video/mp4", "clip.mp4"),
        ("clip.MP4", "video/mp4", "clip.MP4"),
        ("clip.mkv", "video/mp4", "clip.mkv"),  # the provider's file name wins
        ("Meeting 2024.01.15", "video/mp4", "Meeting 2024.01.15.mp4"),
        ("Vol. 2", "video/webm", "Vol. 2.webm"),
        ("", "video/mp4", "id-1.mp4"),
    ],
)
def test_extension_from_content_type(raw: str, content_type: str | None, expected: str) -> None:
    assert name_entries([("id-1", raw, False, content_type)]) == [expected]


def _fuzzed_names(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    pool = [
        "a",
        "Z",
        " ",
        ".",
        "..",
        "/",
        "\x00",
        "\n",
        "\x7f",
        "é",
        "e\u0301",
        "日本",
        "\ud800",
        ".mp4",
        ".MOV",
        "~",
    ]
    return [
        "".join(rng.choice(pool) for _ in range(rng.choice([0, 1, 3, 12, 90, 140]))) for _ in range(count)
    ]


@pytest.mark.parametrize("content_type", ["video/mp4", "video/quicktime", None])
def test_a_file_name_given_as_the_name_is_named_the_same(content_type: str | None) -> None:
    """`file_name` is what a provider may give as the name (Hour One does): naming it again changes
    nothing, gives back that very string (one string for the video and its node), and a directory of such
    names gets the names it would have got from the raw ones, duplicates included."""
    raws = [raw for _id, raw, is_dir, _ct in _mixed_items() if not is_dir] + _fuzzed_names(7, 400)
    items = [(f"id-{i}", raw, False, content_type) for i, raw in enumerate(raws)]  # an id once, as listed
    given = [(rid, file_name(raw, rid, ctype), False, ctype) for rid, raw, _d, ctype in items]
    for rid, name, _d, ctype in given:
        again = file_name(name, rid, ctype)
        assert again == name and again is name, (name, again)
    assert name_entries(given) == name_entries(items)


def test_directories_get_no_extension() -> None:
    assert name_entries([("d", "season", True, "video/mp4")]) == ["season"]


def test_added_extension_survives_long_names() -> None:
    [name] = name_entries([("1", "a" * 300, False, "video/mp4")])
    assert name.endswith(".mp4") and nbytes(name) == 255


# --------------------------------------------------------------------------------------------- duplicates


def test_every_duplicate_holder_gets_its_id() -> None:
    items = [
        ("6414", "clip.mp4", False, None),
        ("6416", "clip", False, "video/mp4"),
        ("7000", "other.mp4", False, None),
    ]
    assert name_entries(items) == ["clip [6414].mp4", "clip [6416].mp4", "other.mp4"]


def test_directories_and_files_share_one_namespace() -> None:
    items = [("d1", "Trip", True, None), ("v1", "Trip", False, None)]
    assert name_entries(items) == ["Trip [d1]", "Trip [v1]"]


def test_directory_suffix_goes_at_the_end() -> None:
    items = [("1", "album.2024", True, None), ("2", "album.2024", True, None)]
    assert name_entries(items) == ["album.2024 [1]", "album.2024 [2]"]


def test_duplicates_after_sanitising() -> None:
    items = [("1", "a/b", False, None), ("2", "a∕b", False, None), ("3", " a∕b ", False, None)]
    assert name_entries(items) == ["a∕b [1]", "a∕b [2]", "a∕b [3]"]


def test_dot_names_collide_with_their_prefixed_form() -> None:
    items = [("1", ".", True, None), ("2", "_.", True, None), ("3", "..", True, None)]
    assert name_entries(items) == ["_. [1]", "_. [2]", "_.."]


def test_nfc_and_nfd_twins_stay_distinct() -> None:
    nfc = unicodedata.normalize("NFC", "Café.mp4")
    nfd = unicodedata.normalize("NFD", "Café.mp4")
    assert nfc != nfd
    names = name_entries([("1", nfc, False, None), ("2", nfd, False, None)])
    assert names == [nfc, nfd]
    assert names[0].encode() != names[1].encode()


def test_case_differences_are_not_duplicates() -> None:
    assert name_entries([("1", "Clip", False, None), ("2", "clip", False, None)]) == ["Clip", "clip"]


def _mixed_items() -> list[tuple[str, str, bool, str | None]]:
    return [
        ("6414", "clip", False, "video/mp4"),
        ("6416", "clip.mp4", False, None),
        ("6415", "clip.mp4", False, "video/mp4"),
        ("10", "clip [6414].mp4", False, None),  # collides with a suffixed name
        ("f1", "Folder", True, None),
        ("f2", "Folder", True, None),
        ("v9", "Folder", False, None),
        ("x/1", "same", False, None),  # ids that clean to the same tag
        ("x∕1", "same", False, None),
        ("dup", "twin", False, None),  # fully identical items
        ("dup", "twin", False, None),
        ("n1", "", False, "video/mp4"),
        ("n2", "\x00", False, None),
        ("u1", "unique", False, None),
        ("long", "L" * 300 + ".mp4", False, None),
        ("long2", "L" * 300 + ".mp4", False, None),
    ]


def test_names_are_unique_and_fit() -> None:
    names = name_entries(_mixed_items())
    assert len(names) == len(set(names)) == len(_mixed_items())
    assert all(0 < nbytes(n) <= MAX_NAME_BYTES for n in names)
    assert all("/" not in n and "\x00" not in n for n in names)


def test_mixed_expected_names() -> None:
    items = _mixed_items()
    names = {
        f"{item[0]}:{n}": name for n, (item, name) in enumerate(zip(items, name_entries(items), strict=True))
    }
    # bumped with a hash: a plain "clip [6414].mp4" exists
    assert re.fullmatch(r"clip \[6414\] \[[0-9a-f]{8}\]\.mp4", names["6414:0"])
    assert names["6416:1"] == "clip [6416].mp4"
    assert names["6415:2"] == "clip [6415].mp4"
    assert names["10:3"] == "clip [6414].mp4"  # a unique plain name is kept
    assert names["f1:4"] == "Folder [f1]"
    assert names["f2:5"] == "Folder [f2]"
    assert names["v9:6"] == "Folder [v9]"
    assert names["u1:13"] == "unique"
    assert names["n1:11"] == "n1.mp4"
    assert names["n2:12"] == "n2"
    assert names["long:14"].endswith(" [long].mp4") and nbytes(names["long:14"]) <= 255
    assert names["long2:15"].endswith(" [long2].mp4") and nbytes(names["long2:15"]) <= 255


@pytest.mark.parametrize("seed", range(20))
def test_names_do_not_depend_on_listing_order(seed: int) -> None:
    items = _mixed_items()
    expected = dict(zip(items, name_entries(items), strict=True))
    expected_pairs = sorted(zip(items, name_entries(items), strict=True), key=repr)
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    got_pairs = sorted(zip(shuffled, name_entries(shuffled), strict=True), key=repr)
    assert got_pairs == expected_pairs
    for item, name in zip(shuffled, name_entries(shuffled), strict=True):
        if item[0] != "dup":  # the two identical items may swap names: the pairs above still match
            assert expected[item] == name


def test_stable_across_calls() -> None:
    items = _mixed_items()
    assert name_entries(items) == name_entries(list(items)) == name_entries(tuple(items))


def test_long_ids_are_shortened_deterministically() -> None:
    long_id = "0123456789" * 10
    items = [(long_id, "clip.mp4", False, None), (long_id + "x", "clip.mp4", False, None)]
    names = name_entries(items)
    assert names[0] != names[1]
    assert all(nbytes(n) <= 255 and n.endswith("].mp4") and n.startswith("clip [0123") for n in names)
    assert all(len(n) < 60 for n in names)
    assert name_entries(items[::-1]) == names[::-1]


def test_suffix_fits_long_multibyte_names() -> None:
    raw = "語" * 120 + ".mp4"  # 364 bytes, cut to the same stem for both
    names = name_entries([("a", raw, False, None), ("b", raw, False, None)])
    assert names[0].endswith(" [a].mp4") and names[1].endswith(" [b].mp4")
    assert all(nbytes(n) <= 255 for n in names)
    assert names[0].startswith("語" * 70)


def test_empty_listing() -> None:
    assert name_entries([]) == []
