"""Fewer, fuller token frames under load: an answer's events read ahead, ready tokens merged.

A transport that writes one frame per token pays its per-frame cost (framing, a syscall, the
ASGI hops) once per token, and while it writes, the next tokens wait in the gRPC stream. Here
the answer's events are read by a task of their own into a queue, and the transport takes what
is there: the tokens that arrived while it was writing go out as one `Token` whose `seq` is
the last of them (so `seq` still counts the answer's tokens). Nothing waits on a timer: when
the queue is empty the transport waits for the next event and sends it as soon as it comes,
so the first token, and every token of an idle server, goes out alone and at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing

from kubechat.chat.events import ChatEvent, Token


async def coalesced(events: AsyncGenerator[ChatEvent, None]) -> AsyncGenerator[ChatEvent, None]:
    """`events` in order, read ahead by a task, with tokens that are ready together merged.

    Closing (or cancelling) the consumer cancels the reader, which closes `events` in the
    reader's own task: a generation cut short there ends as it would if iterated directly.
    An exception `events` raised is raised here, after the events before it.
    """
    ready: deque[ChatEvent] = deque()
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] | None = None
    ended = False
    failure: Exception | None = None

    async def read() -> None:
        nonlocal ended, failure, waiter
        try:
            async with aclosing(events):
                async for event in events:
                    ready.append(event)
                    if waiter is not None:
                        if not waiter.done():
                            waiter.set_result(None)
                        waiter = None
        except Exception as exc:
            failure = exc
        finally:
            ended = True
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    reader = asyncio.create_task(read(), name="answer-events")
    try:
        while True:
            if not ready:
                if ended:
                    break
                waiter = loop.create_future()
                await waiter
                continue
            event = ready.popleft()
            if type(event) is Token and ready and type(ready[0]) is Token:
                texts = [event.text]
                seq = event.seq
                while ready and type(ready[0]) is Token:
                    token = ready.popleft()
                    assert type(token) is Token
                    texts.append(token.text)
                    seq = token.seq
                event = Token(seq, "".join(texts))
            yield event
        if failure is not None:
            raise failure
    finally:
        if not reader.done():
            reader.cancel()
            # Not suppressing: a second cancellation of this task must still reach it.
            await asyncio.wait({reader})
