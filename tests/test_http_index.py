"""The plain-HTTP provider (`type = "http"`): index parsing, link rules, Basic auth, and real mounts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Emulator, sha256_file, start_emulator, stop_process
from tests.providers import CASES
from vidfs.config.types import HttpSettings, ProviderConfig, Secret
from vidfs.emulator.http_index import apache_size
from vidfs.emulator.server import Request, Site, start_sites
from vidfs.errors import AuthError, ConfigError, redact_url
from vidfs.http.client import HttpClient
from vidfs.model import Folder, Video, frozen_extra
from vidfs.providers import http_index
from vidfs.providers.base import ProviderContext
from vidfs.providers.http_index import HttpIndexProvider, canonical_path, parse_index
from vidfs.stats import Stats

BASE = "http://127.0.0.1:8089/media/"

NGINX_PAGE = """<html>\r
<head><title>Index of /media/</title></head>\r
<body>\r
<h1>Index of /media/</h1><hr><pre><a href="../">../</a>\r
<a href="sub%20dir/">sub dir/</a>                                          22-Nov-2026 10:00                   -\r
<a href="Caf%C3%A9%20%231.mp4">Café #1.mp4</a>                                        22-Nov-2026 10:05             4194304\r
<a href="100%25%20real.mov">100% real.mov</a>                                      01-Feb-2025 23:59                 512\r
<a href="a%20file%20whose%20name%20is%20longer%20than%20the%20fifty%20characters.mp4">a file whose name is longer than the fifty char..&gt;</a> 01-Jan-2025 00:00             1000\r
<a href="approx.mp4">approx.mp4</a>                                         01-Jan-2025 00:00    12M\r
<a href="http://other.example.com/media/x.mp4">x.mp4</a>                                              01-Jan-2025 00:00               5\r
<a href="//other.example.com/media/y.mp4">y.mp4</a>                                              01-Jan-2025 00:00               5\r
<a href="/elsewhere/z.mp4">z.mp4</a>                                              01-Jan-2025 00:00               5\r
<a href="https://127.0.0.1:8089/media/tls.mp4">tls.mp4</a>                                            01-Jan-2025 00:00               5\r
<a href="sub%20dir/deeper.mp4">deeper.mp4</a>                                         01-Jan-2025 00:00               5\r
<a href="?C=N;O=D">sort</a>\r
<a href="mailto:ops@example.com">mail</a>\r
</pre><hr></body>\r
</html>\r
"""  # noqa: E501

APACHE_TABLE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html>
 <head>
  <title>Index of /media</title>
 </head>
 <body>
<h1>Index of /media</h1>
  <table>
   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>
   <tr><th colspan="5"><hr></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top"><a href="Archive%201987/"><img src="/icons/folder.gif" alt="[DIR]"></a></td><td><a href="Archive%201987/">Archive 1987/</a></td><td align="right">2026-11-22 11:00  </td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top"><a href="big%20reel.mp4"><img src="/icons/movie.gif" alt="[VID]"></a></td><td><a href="big%20reel.mp4">big reel.mp4</a></td><td align="right">2026-11-22 10:20  </td><td align="right"> 62M</td><td>The 2019 cut</td></tr>
<tr><td valign="top"><img src="/icons/text.gif" alt="[TXT]"></td><td><a href="notes.txt">notes.txt</a></td><td align="right">2026-11-22 10:21:07  </td><td align="right">300 </td><td>&nbsp;</td></tr>
<tr><td valign="top"><img src="/icons/movie.gif" alt="[VID]"></td><td><a href="http://mirror.example.com/media/big%20reel.mp4">mirror</a></td><td align="right">2026-11-22 10:20  </td><td align="right"> 62M</td><td>&nbsp;</td></tr>
   <tr><th colspan="5"><hr></th></tr>
</table>
<address>Apache/2.4.57 (Debian) Server at 127.0.0.1 Port 8089</address>
</body></html>
"""  # noqa: E501

APACHE_PRE = """<html><head><title>Index of /media</title></head><body><h1>Index of /media</h1>
<pre><img src="/icons/blank.gif" alt="Icon "> <a href="?C=N;O=D">Name</a>                    <a href="?C=M;O=A">Last modified</a>      <a href="?C=S;O=A">Size</a>  <a href="?C=D;O=A">Description</a><hr><img src="/icons/back.gif" alt="[PARENTDIR]"> <a href="/">Parent Directory</a>                             -
<img src="/icons/movie.gif" alt="[VID]"> <a href="clip.mov">clip.mov</a>                2026-11-22 10:40  2.0M
<img src="/icons/movie.gif" alt="[VID]"> <a href="tiny.mp4">tiny.mp4</a>                2026-11-22 10:41   900
<hr></pre>
</body></html>
"""  # noqa: E501

APACHE_PLAIN = """<html><head><title>Index of /media</title></head><body><h1>Index of /media</h1>
<ul><li><a href="/"> Parent Directory</a></li>
<li><a href="clip.mov"> clip.mov</a></li>
<li><a href="Ordner/"> Ordner/</a></li>
</ul></body></html>
"""

NGINX_JSON = """[
{ "name":"sub dir", "type":"directory", "mtime":"Sun, 22 Nov 2026 10:00:00 GMT" },
{ "name":"Café #1.mp4", "type":"file", "mtime":"Sun, 22 Nov 2026 10:05:00 GMT", "size":4194304 },
{ "name":"dangling", "type":"other", "mtime":"Sun, 22 Nov 2026 10:05:00 GMT" },
{ "name":"..", "type":"directory", "mtime":"Sun, 22 Nov 2026 10:05:00 GMT" }
]
"""

T_2026_11_22_10_00 = 1795341600.0


def _by_name(entries: list[Any]) -> dict[str, Any]:
    return {entry.name: entry for entry in entries}


# ------------------------------------------------------------------------------------------- parsing
def test_nginx_html_index() -> None:
    entries = _by_name(parse_index(NGINX_PAGE, BASE, "text/html"))
    # Off-origin, other scheme, parent, absolute elsewhere, two levels deep, sorting and mailto: ignored.
    assert sorted(entries) == sorted(
        [
            "sub dir",
            "Café #1.mp4",
            "100% real.mov",
            "a file whose name is longer than the fifty characters.mp4",
            "approx.mp4",
        ]
    )
    sub = entries["sub dir"]
    assert sub.is_dir and sub.segment == "sub%20dir/" and sub.mtime == T_2026_11_22_10_00 and sub.size is None
    cafe = entries["Café #1.mp4"]
    assert not cafe.is_dir and cafe.size == 4194304 and cafe.mtime == T_2026_11_22_10_00 + 300
    assert cafe.url == BASE + "Caf%C3%A9%20%231.mp4"
    assert entries["100% real.mov"].size == 512
    # The name comes from the href, not from nginx's cut link text.
    assert entries["a file whose name is longer than the fifty characters.mp4"].size == 1000
    # `autoindex_exact_size off` sizes are approximate: unknown (the engine HEADs), shown as a hint.
    approx = entries["approx.mp4"]
    assert approx.size is None and approx.size_text == "12M"


def test_apache_fancy_table() -> None:
    entries = _by_name(parse_index(APACHE_TABLE, BASE, "text/html;charset=UTF-8"))
    assert sorted(entries) == ["Archive 1987", "big reel.mp4", "notes.txt"]  # no Parent Directory, mirror
    assert entries["Archive 1987"].is_dir and entries["Archive 1987"].mtime == T_2026_11_22_10_00 + 3600
    big = entries["big reel.mp4"]
    assert big.size is None and big.size_text == "62M"  # Apache rounds: the engine HEADs for the size
    assert big.mtime == T_2026_11_22_10_00 + 20 * 60  # the icon link and the name link are one entry
    notes = entries["notes.txt"]
    assert notes.size == 300 and notes.mtime == T_2026_11_22_10_00 + 21 * 60 + 7


def test_apache_pre_and_plain_lists() -> None:
    pre = _by_name(parse_index(APACHE_PRE, BASE))
    assert sorted(pre) == ["clip.mov", "tiny.mp4"]
    assert pre["clip.mov"].size is None and pre["clip.mov"].size_text == "2.0M"
    assert pre["tiny.mp4"].size == 900 and pre["tiny.mp4"].mtime == T_2026_11_22_10_00 + 41 * 60
    plain = _by_name(parse_index(APACHE_PLAIN, BASE))
    assert sorted(plain) == ["Ordner", "clip.mov"]
    assert plain["Ordner"].is_dir and plain["clip.mov"].size is None and plain["clip.mov"].mtime is None


def test_nginx_json_index() -> None:
    entries = _by_name(parse_index(NGINX_JSON, BASE, "application/json"))
    assert sorted(entries) == ["Café #1.mp4", "sub dir"]
    assert entries["Café #1.mp4"].segment == "Caf%C3%A9%20%231.mp4"
    assert entries["Café #1.mp4"].size == 4194304
    assert entries["Café #1.mp4"].mtime == T_2026_11_22_10_00 + 300
    assert entries["sub dir"].is_dir and entries["sub dir"].segment == "sub%20dir/"


def test_one_link_spelled_two_ways_is_one_entry() -> None:
    page = (
        '<pre><a href="Caf%c3%a9.mp4">x</a> 22-Nov-2026 10:00 5\n'
        '<a href="Café.mp4">y</a> 22-Nov-2026 10:00 5\n'
    )
    entries = parse_index(page, BASE)
    assert [e.segment for e in entries] == ["Caf%C3%A9.mp4"]
    assert canonical_path("/a%2Fb/c d/") == "/a%2Fb/c%20d/"  # an encoded slash stays inside its segment


@pytest.mark.parametrize(
    "page_url",
    [BASE, "http://127.0.0.1:9/d%c3%a9j%C3%A0/", "http://127.0.0.1:9/", "http://127.0.0.1:9/a/?q=/"],
)
def test_plain_links_take_the_short_way_to_the_same_entries(page_url: str) -> None:
    """Plain relative links skip urljoin and the origin checks: each must give the entry the long way
    gives, for every spelling a server may write."""
    hrefs = [
        "a.mp4", "dir/", "Caf%c3%a9.mp4", "Café.mp4", "a%2Fb.mp4", "..", "../", ".", "./", "%2E%2E/",
        "a b.mp4", "x?y", "#top", "?C=M;O=A", "http:x.mp4", "/abs.mp4", "//other.host/x.mp4", "sub/x.mp4",
        "v%20(1).mkv", "~tilde;x=1,y.mp4", "pct%zz.mp4", "a\\b.mp4", "é/", "x.mp4#frag", " padded.mp4 ",
    ]  # fmt: skip
    plain = http_index._takes_plain_links(page_url)
    assert plain == ("?" not in page_url)
    short_ways = 0
    for href in hrefs:
        link = http_index._Link(href, ["22-Nov-2026 10:00 5"])
        short: dict[str, http_index.IndexEntry] = {}
        long: dict[str, http_index.IndexEntry] = {}
        http_index._add_link(link, short, page_url, plain)
        http_index._add_link(link, long, page_url, False)
        assert short == long, href
        short_ways += bool(plain and http_index._PLAIN_SEGMENT.fullmatch(href.strip()))
    assert short_ways >= (12 if plain else 0)


# ------------------------------------------------------------------------------------------ provider
def _provider(site_url: str, http: HttpClient, **options: Any) -> HttpIndexProvider:
    config = ProviderConfig(
        name="site", type="http", options={"url": site_url, **options}, source=Path("test.toml")
    )
    context = ProviderContext(
        instance="site", http=http, state_dir=Path("/nonexistent"), log=logging.getLogger("test")
    )
    return HttpIndexProvider(config, context)


def test_config_errors_are_one_line() -> None:
    http = HttpClient(HttpSettings(), Stats())
    with pytest.raises(ConfigError, match=r"username.*password"):
        _provider("http://u:p@127.0.0.1:1/", http)
    with pytest.raises(ConfigError, match="go together"):
        _provider("http://127.0.0.1:1/", http, username="u")
    with pytest.raises(ConfigError, match="http:// or https://"):
        _provider("ftp://127.0.0.1/pub/", http)


class _TwoOrigins(Site):
    """Origin A: an index linking to B, and a directory that redirects to B. B: records what it gets."""

    def __init__(self, other: Site) -> None:
        super().__init__("a")
        self.other = other
        self.add_route("GET", r"/pub/", self.index)
        self.add_route("GET", r"/pub/moved/", self.moved)

    def index(self, req: Request) -> None:
        page = (
            f'<pre><a href="{self.other.url}/pub/evil.mp4">evil.mp4</a> 22-Nov-2026 10:00 5\n'
            '<a href="moved/">moved/</a> 22-Nov-2026 10:00 -\n'
            '<a href="ok.mp4">ok.mp4</a> 22-Nov-2026 10:00 7\n</pre>'
        )
        req.send_bytes(200, page.encode(), "text/html")

    def moved(self, req: Request) -> None:
        req.send_bytes(302, b"", headers={"Location": f"{self.other.url}/pub/moved/"})


class _Other(Site):
    def __init__(self) -> None:
        super().__init__("b")
        self.add_route("GET", r"/pub/moved/", self.index)

    def index(self, req: Request) -> None:
        req.send_bytes(
            200, b'<pre><a href="inner.mp4">inner.mp4</a> 22-Nov-2026 10:00 9\n</pre>', "text/html"
        )


async def test_credentials_stay_on_the_base_origin() -> None:
    other = _Other()
    with start_sites(other, _TwoOrigins(other)) as sites:
        http = HttpClient(HttpSettings(retries=0), Stats())
        try:
            provider = _provider(
                sites["a"].url + "/pub", http, username="u", password=Secret("literal", "pw")
            )
            listing = await provider.list(provider.root())
            names = {entry.name: entry for entry in listing.entries}
            assert sorted(names) == ["moved", "ok.mp4"]  # the link to origin B is not followed
            ok = names["ok.mp4"]
            assert isinstance(ok, Video) and ok.size == 7
            lease = await provider.resolve(ok)
            assert lease.url == sites["a"].url + "/pub/ok.mp4"
            assert lease.headers["Authorization"].startswith("Basic ")
            assert lease.expires_at is None
            moved = names["moved"]
            assert isinstance(moved, Folder)
            inner = (await provider.list(moved)).entries
            assert [e.name for e in inner] == ["inner.mp4"]
            # The redirect reached B, without the credentials (a site logs a request from its start, so an
            # answered one is in the log).
            got = sites["b"].log.entries()
            assert got and all("authorization" not in entry["headers"] for entry in got)
            assert all("authorization" in entry["headers"] for entry in sites["a"].log.entries())
        finally:
            await http.aclose()


async def test_wrong_or_missing_credentials_are_auth_errors(media_dir: Path) -> None:
    with start_sites("http", media_dir=media_dir) as sites:
        site = sites["http"]
        table = site.config()
        http = HttpClient(HttpSettings(retries=0), Stats())
        try:
            good = _provider(table["url"], http, username=table["username"], password=table["password"])
            assert {e.name for e in (await good.list(good.root())).entries} >= {
                "interview.mp4",
                "Archive 1987",
            }
            bad = _provider(table["url"], http, username=table["username"], password="not-the-password")
            with pytest.raises(AuthError, match="credentials refused") as info:
                await bad.list(bad.root())
            assert "not-the-password" not in str(info.value)
            anonymous = _provider(table["url"], http)
            with pytest.raises(AuthError, match="asks for credentials"):
                await anonymous.list(anonymous.root())
        finally:
            await http.aclose()


# -------------------------------------------------------------------------------------------- mounts
@pytest.fixture
def emulator(tmp_path: Path, media_dir: Path, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    settings: list[str] = []
    for key, value in getattr(request, "param", {}).items():
        settings += ["--set", f"http.{key}={value}"]
    emu = start_emulator(tmp_path / "emulator", ["http"], media_dir, *settings)
    try:
        yield emu
    finally:
        stop_process(emu.process)


def test_subtree_mounts_the_provider_at_the_root(emulator: Emulator, make_config: Any, mounts: Any) -> None:
    config = make_config({"site": emulator.config("http")})
    mount = mounts(config, "--subtree", "site")
    expected = CASES["http"].expected(emulator.catalog("http"))
    top = sorted({rel.split("/", 1)[0] for rel in expected} | {"empty"})
    assert sorted(os.listdir(mount.path)) == top  # the provider's directory itself, not /site
    assert not (mount.path / "site").exists()
    nested = "Archive 1987/nested/deep clip.mov"
    assert sha256_file(mount.path / nested) == expected[nested].sha256
    assert os.getxattr(mount.path / nested, "user.vidfs.path") == nested.encode()


@pytest.mark.parametrize("emulator", [{"index_format": "apache"}], indirect=True)
def test_apache_index_sizes_come_from_head(emulator: Emulator, make_config: Any, mounts: Any) -> None:
    config = make_config({"site": emulator.config("http")})
    mount = mounts(config)
    expected = CASES["http"].expected(emulator.catalog("http"))
    for rel, expect in expected.items():
        st = os.stat(mount.path / "site" / rel)
        assert st.st_size == expect.size, rel
        assert int(st.st_mtime) == int(expect.mtime or 0), rel
    heads = [r for r in emulator.requests("http") if r["method"] == "HEAD"]
    assert heads, "Apache shows rounded sizes: the engine must HEAD for the exact ones"
    big = "big reel.mp4"
    shown = apache_size(expected[big].size).strip().encode()
    assert shown.endswith(b"M") and os.getxattr(mount.path / "site" / big, "user.vidfs.index_size") == shown
    assert sha256_file(mount.path / "site" / "Café #1.mp4") == expected["Café #1.mp4"].sha256


@pytest.mark.parametrize("emulator", [{"index_format": "nginx_json", "auth": "false"}], indirect=True)
def test_nginx_json_index_without_auth(emulator: Emulator, make_config: Any, mounts: Any) -> None:
    table = emulator.config("http")
    assert "password" not in table
    mount = mounts(make_config({"site": table}))
    expected = CASES["http"].expected(emulator.catalog("http"))
    seen = {
        str((Path(d) / f).relative_to(mount.path / "site"))
        for d, _dirs, files in os.walk(mount.path / "site")
        for f in files
    }
    assert seen == set(expected)
    assert all("authorization" not in r["headers"] for r in emulator.requests("http"))
    assert not any(r["method"] == "HEAD" for r in emulator.requests("http"))  # JSON sizes are exact


@pytest.mark.parametrize(
    "site_url", ["http://127.0.0.1:9/media", "http://Example.COM:8080/D%c3%a9j%C3%A0/", "http://[::1]:9/x/"]
)
def test_listed_entries_carry_their_path_and_redacted_url(site_url: str) -> None:
    """The xattr maps are built from keys already sorted and a base redacted once: what they hold must be
    what `frozen_extra` and a redaction per URL give."""
    provider = _provider(site_url, http=None)  # type: ignore[arg-type]  # nothing is fetched
    base = provider._url("")
    page = (
        '<pre><a href="sub/">sub/</a> 22-Nov-2026 10:00 -\n'
        '<a href="a%20b.mp4">a b.mp4</a> 22-Nov-2026 10:00 1234\n'
        '<a href="c.mkv">c.mkv</a> 22-Nov-2026 10:00 1.2M\n</pre>'
    )
    listed = list(provider._entries("top/", parse_index(page, base + "top/")))
    expected = {
        "top/sub/": frozen_extra({"path": "top/sub"}),
        "top/a%20b.mp4": frozen_extra({"url": redact_url(base + "top/a%20b.mp4"), "path": "top/a b.mp4"}),
        "top/c.mkv": frozen_extra(
            {"url": redact_url(base + "top/c.mkv"), "path": "top/c.mkv", "index_size": "1.2M"}
        ),
    }
    assert {entry.remote_id: dict(entry.extra) for entry in listed} == {
        k: dict(v) for k, v in expected.items()
    }
    assert [type(entry) for entry in listed] == [Folder, Video, Video]
