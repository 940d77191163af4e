"""Keys of a large listing asked about a few times: kept as a sorted list of references, not as a set.

Why. A set of 100,000 ids is about 4 MiB (a table of 262,144 slots of 16 bytes); a sorted list of
references to the same strings is 0.8 MiB (8 bytes a key). Sets built only to ask which keys repeat, or
whether a key was in the previous listing, were each a transient 4-5 MiB at the peak of a re-listing of
100,000 videos: the names of a directory being built, its page merges, the ids of a listing being saved.
Sorting costs O(n log n) comparisons (about 50 ms at 100,000) and a lookup O(log n), which is why these
are for questions asked of a listing once, not for tables a hot path reads.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable


def repeated_keys(keys: Iterable[str]) -> set[str]:
    """The keys met more than once."""
    return SortedKeys(keys).repeated()


class SortedKeys:
    """`key in keys` for a fixed collection of keys."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = sorted(keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        keys = self._keys
        at = bisect.bisect_left(keys, key)
        return at < len(keys) and keys[at] == key

    def __len__(self) -> int:
        return len(self._keys)

    def repeated(self) -> set[str]:
        """The keys met more than once."""
        return {a for a, b in itertools.pairwise(self._keys) if a == b}


__all__ = ["SortedKeys", "repeated_keys"]
