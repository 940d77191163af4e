"""The block cache's memory tier (`vidfs.io.block_lru.ByteLRU`): bounded in bytes, least recently used out."""

from __future__ import annotations

from vidfs.io.block_lru import ByteLRU
from vidfs.io.remote_file import FileKey


def test_evicts_least_recently_used_until_the_new_block_fits() -> None:
    lru: ByteLRU[str] = ByteLRU(10)
    assert lru.put("a", b"aaaa") and lru.put("b", b"bbb") and lru.put("c", b"cc")
    assert lru.get("a") == b"aaaa"  # now the most recently used: "b" is the oldest
    assert lru.put("d", b"dddd")  # 9 + 4 > 10: "b" goes, then 6 + 4 fits
    assert list(lru) == ["c", "a", "d"]
    assert (lru.currsize, len(lru)) == (10, 3)
    assert "b" not in lru and lru.get("b") is None


def test_membership_does_not_refresh_a_block() -> None:
    lru: ByteLRU[str] = ByteLRU(6)
    lru.put("a", b"aaa")
    lru.put("b", b"bbb")
    assert "a" in lru
    lru.put("c", b"ccc")
    assert list(lru) == ["b", "c"]


def test_replacing_a_block_counts_its_new_size_only() -> None:
    lru: ByteLRU[str] = ByteLRU(8)
    lru.put("a", b"aaaa")
    lru.put("a", b"aa")
    assert (lru.currsize, list(lru)) == (2, ["a"])
    assert lru.pop("a") == b"aa" and lru.pop("a") is None
    assert (lru.currsize, len(lru)) == (0, 0)


def test_a_block_larger_than_the_budget_is_refused_and_evicts_nothing() -> None:
    lru: ByteLRU[str] = ByteLRU(4)
    lru.put("a", b"aaa")
    assert lru.put("big", b"12345") is False
    assert (list(lru), lru.currsize) == (["a"], 3)


def test_file_keys_hash_and_compare_by_their_fields() -> None:
    key = FileKey("site", "video-1", "etag-1")
    twin = FileKey("site", "video-1", "etag-1")
    other = FileKey("site", "video-1", "etag-2")
    assert key == twin and hash(key) == hash(twin) and key != other
    lru: ByteLRU[tuple[FileKey, int]] = ByteLRU(100)
    lru.put((key, 0), b"x")
    assert lru.get((twin, 0)) == b"x" and lru.get((other, 0)) is None
    assert repr(key) == "FileKey(instance='site', remote_id='video-1', fingerprint='etag-1')"


def test_a_demoted_block_is_the_next_to_go() -> None:
    lru: ByteLRU[str] = ByteLRU(3)
    for key in "abc":
        lru.put(key, b"x")
    lru.demote("c")
    lru.demote("absent")  # nothing happens
    lru.put("d", b"x")
    assert list(lru) == ["a", "b", "d"]
