"""The one shape of every listing the API answers: a page of `items` and the `next_cursor`.

Each listing names its page (`class SessionPage(ItemPage[SessionOut])`) so the OpenAPI schema,
and the TypeScript types generated from it, say `SessionPage` rather than `ItemPage_SessionOut_`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Generic, Self, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from kubechat.core.pagination import Page

T = TypeVar("T")
R = TypeVar("R")

Limit = Annotated[int, Query(ge=1, le=200, description="The most items this page holds.")]
Cursor = Annotated[
    str | None,
    Query(description="The `next_cursor` of the previous page; absent for the first page."),
]


class ItemPage(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: Page[R], item: Callable[[R], T]) -> Self:
        return cls(items=[item(row) for row in page.items], next_cursor=page.next_cursor)
