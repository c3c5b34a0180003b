"""Pages of a listing and the one codec of their cursors.

Cursors are opaque to clients. Three kinds exist, the same in every store so that a cursor reads
the same whichever store made it: *after a time and an id* (`<epoch seconds>:<id>`, for
listings ordered by a timestamp with the id breaking ties) and *after a sequence number* (an
integer, for a session's messages) and *after a name* (the name itself, for short listings held
in memory and ordered by name: models, knowledge bases). A cursor that does not parse is an
InvalidRequestError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kubechat.core.errors import InvalidRequestError

T = TypeVar("T")

# The largest sequence number any store can hold (SQLite's and Elasticsearch's signed 64 bits).
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def time_cursor(at: float, last_id: str) -> str:
    return f"{at!r}:{last_id}"


def parse_time_cursor(cursor: str) -> tuple[float, str]:
    """(time, id) of a time cursor."""
    at, _, last_id = cursor.partition(":")
    try:
        value = float(at)
    except ValueError:
        raise InvalidRequestError(f"invalid cursor {cursor!r}") from None
    if not math.isfinite(value):
        raise InvalidRequestError(f"invalid cursor {cursor!r}")
    return value, last_id


def seq_cursor(seq: int) -> str:
    return str(seq)


def parse_seq_cursor(cursor: str) -> int:
    try:
        seq = int(cursor)
    except ValueError:
        raise InvalidRequestError(f"invalid cursor {cursor!r}") from None
    if not 0 <= seq <= MAX_SEQ:
        raise InvalidRequestError(f"invalid cursor {cursor!r}")
    return seq


def page_of(rows: Sequence[T], limit: int, cursor: Callable[[T], str]) -> Page[T]:
    """The page of a listing asked for `limit + 1` rows: the first `limit`, and a cursor after
    the last of them when there were more (none for a limit of 0 or less)."""
    items = list(rows[: max(limit, 0)])
    more = len(rows) > limit > 0
    return Page(items, cursor(items[-1]) if more else None)


def page_by_name(rows: Sequence[T], limit: int, cursor: str | None, name: Callable[[T], str]) -> Page[T]:
    """A page of a listing held in memory, ordered by name: the rows after the cursor's name."""
    ordered = sorted(rows, key=name)
    if cursor is not None:
        ordered = [row for row in ordered if name(row) > cursor]
    return page_of(ordered[: max(limit, 0) + 1], limit, name)


def page_newest_first(
    rows: Sequence[T], limit: int, cursor: str | None, key: Callable[[T], tuple[float, str]]
) -> Page[T]:
    """A page of a listing held in memory, newest first by (time, id): the rows older than the
    cursor's (time, id)."""
    ordered = sorted(rows, key=key, reverse=True)
    if cursor is not None:
        after = parse_time_cursor(cursor)
        ordered = [row for row in ordered if key(row) < after]
    return page_of(ordered[: max(limit, 0) + 1], limit, lambda row: time_cursor(*key(row)))
