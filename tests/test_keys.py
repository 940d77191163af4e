"""`vidfs.catalog.keys`: the sorted-references stand-ins for sets of a listing's keys."""

from __future__ import annotations

from vidfs.catalog.keys import SortedKeys, repeated_keys


def test_repeated_keys_are_those_met_more_than_once() -> None:
    assert repeated_keys(["b", "a", "c", "a", "b", "a"]) == {"a", "b"}
    assert repeated_keys(["x", "y"]) == set()
    assert repeated_keys([]) == set()


def test_sorted_keys_answer_membership_like_a_set() -> None:
    ids = [f"id-{n}" for n in range(0, 1000, 3)]
    keys = SortedKeys(reversed(ids))
    assert len(keys) == len(ids)
    for n in range(-2, 1003):
        assert (f"id-{n}" in keys) == (n % 3 == 0 and 0 <= n < 1000)
    assert "" not in keys and "zzz" not in keys and 7 not in keys
    assert "a" not in SortedKeys([])
