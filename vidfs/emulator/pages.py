"""The paging envelopes of the emulated vendors, as pure functions of (page items, total, page, size).

Each vendor pages its lists its own way, and clients depend on the details; these functions keep them
faithful at any scale (they never see more than one page of items):

`hal_page`          Pixop (Spring HATEOAS): ``_links`` self/next/previous/first/last with
                    ``page``/``page-size`` in the query, ``next`` absent on the last page, ``previous`` capped
                    at the last page, ``_embedded.{key}`` and ``_embedded.totalFound``.
`laravel_page`      AIPIX (Laravel's LengthAwarePaginator): ``data``, ``links`` first/last/prev/next and
                    ``meta`` current_page/from/last_page/links/path/per_page/to/total, whose ``meta.links``
                    is Laravel's window of page buttons (``...`` between distant ones).
`rails_pagination`  Cupix: ``total_entries, total_pages, per_page, current_page, next_page,
                    previous_page`` (page numbers, or null).
`last_page`         ceil(total / size), at least 1 (the HAL and Laravel rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

JSON = dict[str, Any]


def last_page(total: int, size: int) -> int:
    return max(1, -(-total // size))


def hal_page(
    base: str,
    filters: Sequence[tuple[str, str]],
    key: str,
    items: list[JSON],
    total: int,
    page: int,
    size: int,
) -> JSON:
    """A HAL page; `base` is the list's absolute URL without query, `filters` its query before paging."""
    last = last_page(total, size)

    def href(n: int) -> JSON:
        return {"href": f"{base}?{urlencode([*filters, ('page', n), ('page-size', size)])}"}

    links: JSON = {"self": href(page)}
    if page < last:
        links["next"] = href(page + 1)
    if page > 1:
        links["previous"] = href(min(page - 1, last))
    links["first"] = href(1)
    links["last"] = href(last)
    return {"pageSize": size, "page": page, "_links": links, "_embedded": {key: items, "totalFound": total}}


def _laravel_buttons(page: int, last: int) -> list[int | None]:
    """The page numbers Laravel shows (None: a "..." gap): all below 14 pages, else a window."""
    if last < 14:
        return list(range(1, last + 1))
    window = set(range(max(1, page - 3), min(last, page + 3) + 1)) | {1, 2, last - 1, last}
    shown: list[int | None] = []
    for number in sorted(window):
        if shown and shown[-1] is not None and number - shown[-1] > 1:
            shown.append(None)
        shown.append(number)
    return shown


def laravel_links(page: int, last: int, page_url: Callable[[int], str]) -> list[JSON]:
    """``meta.links``: previous, the page buttons, next."""
    links: list[JSON] = [
        {"url": page_url(page - 1) if page > 1 else None, "label": "pagination.previous", "active": False}
    ]
    for n in _laravel_buttons(page, last):
        if n is None:
            links.append({"url": None, "label": "...", "active": False})
        else:
            links.append({"url": page_url(n), "label": str(n), "active": n == page})
    links.append(
        {"url": page_url(page + 1) if page < last else None, "label": "pagination.next", "active": False}
    )
    return links


def laravel_page(
    items: list[JSON], total: int, page: int, per_page: int, path: str, page_url: Callable[[int], str]
) -> JSON:
    """A Laravel page; `path` is the list's URL without query, `page_url(n)` the URL of page n."""
    last = last_page(total, per_page)
    first_index = (page - 1) * per_page + 1
    return {
        "data": items,
        "links": {
            "first": page_url(1),
            "last": page_url(last),
            "prev": page_url(page - 1) if page > 1 else None,
            "next": page_url(page + 1) if page < last else None,
        },
        "meta": {
            "current_page": page,
            "from": first_index if items else None,
            "last_page": last,
            "links": laravel_links(page, last, page_url),
            "path": path,
            "per_page": per_page,
            "to": first_index + len(items) - 1 if items else None,
            "total": total,
        },
    }


def rails_pagination(total: int, page: int, per_page: int) -> JSON:
    total_pages = -(-total // per_page)
    return {
        "total_entries": total,
        "total_pages": total_pages,
        "per_page": per_page,
        "previous_page": page - 1 if page > 1 else None,
        "current_page": page,
        "next_page": page + 1 if page < total_pages else None,
    }
