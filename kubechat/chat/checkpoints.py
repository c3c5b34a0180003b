"""The streaming answers' checkpoints, written together about once a second.

Each stored turn used to write its own checkpoint once a second from its token loop: one trip
to the store's thread per answer and second. With thousands of slow answers streaming at once
(each lives longer, as they share the model) that is thousands of trips a second, and the cost
per turn grew with the number of open sockets (benchmarks/sockets.py). Here one task writes the
text of every answer that grew since its last checkpoint in one call (`HistoryStore.checkpoint`,
one transaction in SQLite), and stops when nothing streams. The promise stays what it was: an
answer's stored text is at most about a second behind while it streams.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from kubechat.stores.history import HistoryStore

logger = logging.getLogger(__name__)

INTERVAL_S = 1.0


class Streaming(Protocol):
    """What a checkpoint reads of an answer (kubechat.chat.generation.Generation)."""

    pieces: list[str]

    @property
    def text(self) -> str: ...


class Checkpoints:
    def __init__(self, store: HistoryStore, interval_s: float = INTERVAL_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self._answers: dict[str, Streaming] = {}
        self._written: dict[str, int] = {}  # pieces of each answer at its last checkpoint
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._in_write: set[str] = set()

    def streaming(self, message_id: str, answer: Streaming) -> None:
        """`answer` streams from now on: checkpoint it until `ended`."""
        self._answers[message_id] = answer
        self._written[message_id] = 0
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="checkpoints")

    async def ended(self, message_id: str) -> None:
        """No more checkpoints of this answer; returns once none of it is being written, so
        the answer's final state is written after its last checkpoint."""
        self._answers.pop(message_id, None)
        self._written.pop(message_id, None)
        writing = self._writing
        if writing is not None and message_id in self._in_write:
            await asyncio.shield(writing)

    async def _run(self) -> None:
        while self._answers:
            await asyncio.sleep(self.interval_s)
            texts = {}
            for message_id, answer in self._answers.items():
                pieces = len(answer.pieces)
                if pieces != self._written[message_id]:
                    self._written[message_id] = pieces
                    texts[message_id] = answer.text
            if not texts:
                continue
            self._in_write = set(texts)
            self._writing = asyncio.get_running_loop().create_future()
            try:
                await self.store.checkpoint(texts)
            except Exception as exc:  # the next second tries again; the final write is each turn's
                logger.warning("writing %d answers' checkpoints failed: %s", len(texts), exc)
            finally:
                self._writing.set_result(None)
                self._writing, self._in_write = None, set()
