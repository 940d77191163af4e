"""ListedUrls: a listing's download URLs, each kept until handed out once; a folder's re-listing keeps only
its new videos' URLs, and never touches another folder's."""

from __future__ import annotations

import sys

import pytest

from vidfs.providers import listed_urls
from vidfs.providers.listed_urls import ListedUrl, ListedUrls


def test_a_url_is_taken_once() -> None:
    urls = ListedUrls()
    urls.remember("room", [("a", "https://s/a"), ("b", "https://s/b")], 10.0)
    assert urls.take("a") == ListedUrl("https://s/a", 10.0)
    assert urls.take("a") is None
    assert urls.statistics() == {"urls": 1, "folders": 1}


def test_a_url_packed_by_the_listing_is_taken_as_the_text_it_was() -> None:
    """A listing may hand its URLs over packed as it read them (`pack`), or as text: the same either way."""
    urls = ListedUrls()
    packed = urls.pack("https://s/a?sig=é")
    assert isinstance(packed, bytes)
    urls.remember("room", [("a", packed), ("b", "https://s/b?sig=2")], 10.0)
    assert urls.take("a") == ListedUrl("https://s/a?sig=é", 10.0)
    assert urls.take("b") == ListedUrl("https://s/b?sig=2", 10.0)


def test_a_relisting_keeps_only_new_videos_and_drops_what_was_never_asked() -> None:
    urls = ListedUrls()
    urls.remember("room", [("a", "https://s/a1"), ("b", "https://s/b1")], 10.0)
    urls.remember("hall", [("h", "https://s/h1")], 10.0)
    urls.remember("room", [("a", "https://s/a2"), ("c", "https://s/c2")], 20.0)
    assert urls.take("a") is None  # listed before: its size is known, an open asks the API
    assert urls.take("b") is None  # gone from the listing, and never asked for
    assert urls.take("c") == ListedUrl("https://s/c2", 20.0)  # new: its size is still to be probed
    assert urls.take("h") == ListedUrl("https://s/h1", 10.0)  # another folder's: untouched
    assert urls.statistics() == {"urls": 0, "folders": 2}


def test_a_relisting_need_not_bring_the_urls_of_what_was_listed_before() -> None:
    """Their URL may come as None or as a URL: not kept either way; a new video's is."""
    urls = ListedUrls()
    urls.remember("room", [("a", "https://s/a1"), ("b", "https://s/b1")], 10.0)
    urls.take("a")
    urls.remember("room", [("a", None), ("b", "https://s/b2"), ("c", "https://s/c2")], 20.0)
    assert urls.take("a") is None and urls.take("b") is None
    assert urls.take("c") == ListedUrl("https://s/c2", 20.0)
    # A None where a URL would have been kept (a listing that raced another's) keeps nothing, harmlessly.
    urls.remember("hall", [("h", None)], 30.0)
    assert urls.take("h") is None


def test_the_table_is_made_small_again_as_urls_are_taken() -> None:
    """A dict keeps its size as items are popped: 100,000 taken URLs left a 5 MiB table behind."""
    urls = ListedUrls()
    urls.remember("all", [(f"v{i}", f"https://s/{i}") for i in range(10_000)], 10.0)
    full = sys.getsizeof(urls._urls)
    for i in range(9_990):
        assert urls.take(f"v{i}") == ListedUrl(f"https://s/{i}", 10.0)
    assert sys.getsizeof(urls._urls) * 50 < full
    # What was not taken is all still there, once each.
    assert [urls.take(f"v{i}") for i in range(9_990, 10_000)] == [
        ListedUrl(f"https://s/{i}", 10.0) for i in range(9_990, 10_000)
    ]
    assert urls.statistics() == {"urls": 0, "folders": 1}


def test_each_url_keeps_the_time_of_the_listing_that_brought_it() -> None:
    """The time is kept once per listing; a URL still here when the next listing comes keeps its own."""
    urls = ListedUrls()
    urls.remember("rec-1", [("1/a", "https://s/1a"), ("1/b", "https://s/1b")], 10.0)
    assert urls.take("1/a") == ListedUrl("https://s/1a", 10.0)
    urls.remember("rec-2", [("2/a", "https://s/2a")], 20.0)
    urls.remember("rec-3", [("3/a", "https://s/3a")], 30.0)
    assert urls.take("2/a") == ListedUrl("https://s/2a", 20.0)
    assert urls.take("1/b") == ListedUrl("https://s/1b", 10.0)
    urls.remember("rec-1", [("1/a", "https://s/1a2"), ("1/c", "https://s/1c")], 40.0)
    assert urls.take("1/c") == ListedUrl("https://s/1c", 40.0)
    assert urls.take("3/a") == ListedUrl("https://s/3a", 30.0)
    assert urls.statistics() == {"urls": 0, "folders": 3}
    assert urls._older == {}  # nothing left behind for URLs gone


def test_a_folder_of_one_video_listed_again_keeps_no_url_of_it() -> None:
    """A VALT record lists one video (its id is then kept as it is, not in a tuple of one): listed again, the
    URL its first listing brought and nobody asked for is dropped, and the new one is not kept either."""
    urls = ListedUrls()
    urls.remember("rec-1", [("1/a", "https://s/1a")], 10.0)
    urls.remember("rec-1", [("1/a", "https://s/1a2")], 20.0)
    assert urls.take("1/a") is None
    urls.remember("rec-2", [("2/a", "https://s/2a")], 30.0)
    urls.remember("rec-2", [("2/a", "https://s/2a2"), ("2/b", "https://s/2b")], 40.0)
    taken = urls.take("2/b")
    assert taken is not None and taken.url == "https://s/2b"
    assert urls.take("2/a") is None
    assert urls.statistics() == {"urls": 0, "folders": 2}


def test_a_few_urls_are_kept_as_text_and_the_rest_packed_each_taken_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Up to TEXTS_HELD URLs given as text stay so (no deflating for VALT's, taken a moment later); past
    that they are packed; listing one again, dropping or taking one keeps the count of texts right."""
    monkeypatch.setattr(listed_urls, "TEXTS_HELD", 2)
    urls = ListedUrls()
    urls.remember("rec-1", [("1/a", "https://s/1a"), ("1/b", "https://s/1b"), ("1/c", "https://s/1c")], 10.0)
    assert [type(urls._urls[key]) for key in ("1/a", "1/b", "1/c")] == [str, str, bytes]
    urls.remember("rec-2", [("1/a", "https://s/1a2")], 20.0)  # moved to another record: still one text
    assert urls._texts == 2 and isinstance(urls._urls["1/a"], str)
    assert urls.take("1/b") == ListedUrl("https://s/1b", 10.0)
    urls.remember("rec-3", [("3/a", "https://s/3a")], 30.0)  # a text again: one was taken
    assert isinstance(urls._urls["3/a"], str)
    urls.remember("rec-3", [("3/b", "https://s/3b")], 40.0)  # 3/a dropped (never asked for): a text left
    assert urls.take("3/a") is None and isinstance(urls._urls["3/b"], str)
    assert [urls.take(key) for key in ("1/a", "1/c", "3/b")] == [
        ListedUrl("https://s/1a2", 20.0),
        ListedUrl("https://s/1c", 10.0),
        ListedUrl("https://s/3b", 40.0),
    ]
    assert urls._texts == 0 and urls.statistics() == {"urls": 0, "folders": 3}
