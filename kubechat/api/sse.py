"""Server-sent events for the streaming endpoints, framed by FastAPI's own `fastapi.sse`.

`format_sse_event` writes each event; `EventSourceResponse` carries them (a StreamingResponse
with the event-stream media type). Chosen over sse-starlette's response, which sends every
event under its own timeout scope beside ping and disconnect tasks, and over FastAPI's
generator endpoints (`response_class=EventSourceResponse` on an endpoint that yields), which
relay every event through a producer task and two memory streams: both cost more per token,
and a generator endpoint could not refuse a request with a JSON error before its stream starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from fastapi.sse import EventSourceResponse, format_sse_event

# How OpenAI-compatible streams end.
DONE = format_sse_event(data_str="[DONE]")


def sse_data(data: str) -> bytes:
    """One event whose data is `data`, serialized already (JSON has no raw line breaks)."""
    return format_sse_event(data_str=data)


def event_stream(events: AsyncIterable[bytes]) -> EventSourceResponse:
    # no-cache: a proxy must not keep an answer generated for one request.
    return EventSourceResponse(events, headers={"Cache-Control": "no-cache"})
