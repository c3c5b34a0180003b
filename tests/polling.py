"""Waiting for something that happens asynchronously: poll with a deadline, never sleep and hope."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, within_s: float = ..., interval_s: float = ...
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], what: str, within_s: float = ..., interval_s: float = ...
) -> T: ...


async def eventually(
    check: Callable[[], Any], what: str, within_s: float = 10.0, interval_s: float = 0.05
) -> Any:
    """Poll `check` (a coroutine function or a plain one) until it returns something truthy;
    return that. Fails after `within_s` seconds naming `what` and the last value seen."""
    deadline = time.monotonic() + within_s
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f}s waiting for {what}; last saw {found!r}")
        await asyncio.sleep(interval_s)


def wait_until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    """`eventually` for code outside an event loop (fixtures starting processes)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within_s:.0f}s waiting for {what}")
        time.sleep(0.1)
