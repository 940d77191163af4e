"""`origin_of` parses a URL's origin once per `scheme://netloc` prefix. It decides where credentials may go
(`same_origin`), so it must say exactly what parsing the whole URL says, for any URL: the tricky ones
written out, and many made of the characters that delimit a URL's parts."""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import pytest

from vidfs.http.client import _ORIGINS, origin_of, same_origin


def whole_url_origin(url: str) -> tuple[str, str, int] | str:
    """The origin from parsing the whole URL (what `origin_of` did before it remembered prefixes)."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return scheme, (parts.hostname or "").lower(), port


def prefix_origin(url: str) -> tuple[str, str, int] | str:
    try:
        return origin_of(url)
    except ValueError as exc:
        return f"ValueError: {exc}"


TRICKY = [
    "https://api.example.com/v1/x?token=1",
    "HTTPS://User:pw@Host.Example:8443/p?q#f",
    "http://user:pa/ss@evil.example/x",
    "http://good.example@evil.example/x",
    "http://h?x=/y",
    "http://h#frag/x",
    "http://[::1]:9000/a",
    "http://[::1/a",
    "http://h:99999/a",
    "http://h:port/a",
    "https://h",
    "http://h:80",
    "//h/x",
    "relative/path?next=http://evil.example/x",
    "a:b://host/x",
    "http:/\t/evil.example/x?u=http://good.example/",
    "http://ho\nst.example/x",
    " http://h/x",
    "http://h\t/x://y/z",
]


@pytest.mark.parametrize("url", TRICKY)
def test_an_origin_is_what_the_whole_url_says(url: str) -> None:
    _ORIGINS.clear()
    first = prefix_origin(url)
    assert first == whole_url_origin(url)
    assert prefix_origin(url) == first  # from the remembered prefix


def test_urls_made_of_delimiters_give_the_same_origins() -> None:
    rng = random.Random(20261203)
    alphabet = ["h", "e", ".", ":", "/", "//", "://", "?", "#", "@", "[", "]", "\t", "\n", " ", "8", "x"]
    schemes = ["http://", "https://", "HTTP://", "", "//", "http:", "http:/"]
    for _ in range(20_000):
        url = rng.choice(schemes) + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert prefix_origin(url) == whole_url_origin(url), url
        assert prefix_origin(url) == whole_url_origin(url), url  # remembered


def test_credentials_stay_home_across_look_alike_urls() -> None:
    home = "https://api.example.com/v1/items"
    assert same_origin(home, "https://api.example.com/v1/other?x=1")
    assert same_origin(home, "https://API.example.com:443/")
    assert not same_origin(home, "https://api.example.com.evil.example/v1/items")
    assert not same_origin(home, "https://api.example.com@evil.example/v1/items")
    assert not same_origin(home, "http://api.example.com/v1/items")
    assert not same_origin(home, "https://api.example.com:8443/v1/items")
