"""Pages of listings held in memory: every row once, in order, whatever the page size."""

from __future__ import annotations

import pytest

from kubechat.core.errors import InvalidRequestError
from kubechat.core.pagination import page_by_name, page_newest_first

NAMES = ["delta", "alpha", "charlie", "bravo", "echo"]
# (time, id): two rows share a time, so the id must break the tie.
ROWS = [(3.0, "c"), (1.0, "a"), (2.0, "b2"), (2.0, "b1"), (4.0, "d")]


def walk(fetch: object, limit: int) -> list[list[object]]:
    pages, cursor = [], None
    while True:
        page = fetch(limit, cursor)  # type: ignore[operator]
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 50])
def test_names_page_in_name_order(limit: int) -> None:
    pages = walk(lambda n, c: page_by_name(NAMES, n, c, str), limit)

    assert [name for page in pages for name in page] == sorted(NAMES)
    assert all(len(page) <= limit for page in pages)
    assert len(pages) == -(-len(NAMES) // limit)  # no empty last page


def test_a_name_cursor_is_after_that_name_even_when_it_is_gone() -> None:
    assert page_by_name(NAMES, 2, "bz", str).items == ["charlie", "delta"]


@pytest.mark.parametrize("limit", [1, 2, 4, 50])
def test_times_page_newest_first_with_ties_broken_by_id(limit: int) -> None:
    pages = walk(lambda n, c: page_newest_first(ROWS, n, c, lambda row: row), limit)

    assert [row for page in pages for row in page] == sorted(ROWS, reverse=True)
    assert len(pages) == -(-len(ROWS) // limit)


def test_a_time_cursor_that_does_not_parse_is_invalid() -> None:
    with pytest.raises(InvalidRequestError):
        page_newest_first(ROWS, 2, "yesterday", lambda row: row)
