"""WebSocket chat: /ws/chat/{session_id}. The route hands the socket to a ChatConnection, which
runs each turn with the chat service and sends its events as the frames of kubechat.api.events."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from kubechat.api.dependencies import Services, ServicesDep, authenticate
from kubechat.api.errors import error_body, http_status
from kubechat.api.events import (
    ClientMessage,
    ErrorEvent,
    HistoryEvent,
    MessageOut,
    PingRequest,
    PongEvent,
    SessionOut,
    StopRequest,
    UserMessage,
    turn_frame,
)
from kubechat.api.observability import current_request_id
from kubechat.api.routing import ApiRoute
from kubechat.chat.events import ChatEvent, Started
from kubechat.chat.generation import TurnControl, failure_of
from kubechat.chat.service import ClientGone
from kubechat.core import metrics
from kubechat.core.errors import BusyError, InvalidRequestError, KubechatError, MessageTooLargeError
from kubechat.core.logs import current_request
from kubechat.stores.history import MessageStatus

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"], route_class=ApiRoute)

_client_messages: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)

# Close codes in the 4000-4999 private range, mirroring HTTP statuses.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class MalformedMessageError(InvalidRequestError):
    code = "malformed_message"


@router.websocket("/ws/chat/{session_id}")
async def chat_socket(websocket: WebSocket, session_id: str, services: ServicesDep) -> None:
    await ChatConnection(websocket, services, session_id).serve()


class ChatConnection:
    """One client socket: reads client messages while a generation task streams events."""

    def __init__(self, websocket: WebSocket, services: Services, session_id: str) -> None:
        self.ws = websocket
        self.services = services
        self.session_id = session_id
        self.principal = ""
        self.turn: asyncio.Task[None] | None = None
        self.control = TurnControl()
        self._send_lock = asyncio.Lock()
        self.request_id = current_request_id() or None

    async def serve(self) -> None:
        # The handshake's answer carries the request id, as every HTTP response does.
        headers = [(b"x-request-id", self.request_id.encode())] if self.request_id else None
        await self.ws.accept(headers=headers)
        metrics.OPEN_WEBSOCKETS.inc()
        try:
            await self._serve()
        finally:
            metrics.OPEN_WEBSOCKETS.dec()

    async def _serve(self) -> None:
        try:
            self.principal = authenticate(self.ws, self.services)
            session = await self.services.store.get_session(self.principal, self.session_id)
        except KubechatError as exc:
            await self.send_error(exc)
            code = CLOSE_UNAUTHENTICATED if http_status(exc) == 401 else CLOSE_NOT_FOUND
            await self.ws.close(code=code, reason=exc.code)
            return
        context = current_request()
        if context is not None:
            context.session_id = self.session_id  # on every log line of this socket and its turns
        recent = await self.services.store.recent_messages(
            self.principal, self.session_id, self.services.settings.history_turns
        )
        await self.send(
            HistoryEvent(
                session=SessionOut.of(session), messages=[MessageOut.of(m) for m in recent]
            ).model_dump_json()
        )
        try:
            await self._read_loop()
        except WebSocketDisconnect:
            pass
        finally:
            await self._abandon_turn()

    async def _read_loop(self) -> None:
        limit = self.services.settings.max_ws_frame_bytes
        while True:
            frame = await self.ws.receive()
            if frame["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(frame.get("code", 1000))
            text = frame.get("text")
            try:
                if text is None:
                    raise MalformedMessageError("frames must be JSON text, not binary")
                # Characters first: only a frame that might exceed the limit is encoded to count.
                if len(text) > limit // 4 and (size := len(text.encode())) > limit:
                    raise MessageTooLargeError(f"frame of {size} bytes exceeds {limit}")
                message = self._parse(text)
                await self._handle(message)
            except Exception as exc:
                # One guard per frame: bad input, or a bug handling it, is an error event; the
                # socket stays open (it closes only when the client goes, or fails to authenticate).
                await self.send_error(failure_of(exc, f"a frame in session {self.session_id}"))

    def _parse(self, text: str) -> ClientMessage:
        try:
            return _client_messages.validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "message"
            raise MalformedMessageError(f"{where}: {first['msg']}") from None

    async def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, PingRequest):
            await self.send(PongEvent().model_dump_json())
        elif isinstance(message, StopRequest):
            if self.turn is not None and not self.turn.done():
                self.control.request_stop(self.turn, MessageStatus.STOPPED)
        elif isinstance(message, UserMessage):
            if self.turn is not None and not self.turn.done():
                raise BusyError("an answer is still streaming; send stop first")
            self.services.chat.check_message(message.content)
            self.control = TurnControl()
            self.turn = asyncio.create_task(self._run_turn(message, self.control))

    async def _run_turn(self, message: UserMessage, control: TurnControl) -> None:
        """The turn task. Its one guard: whatever escapes the turn (a refusal before anything
        was stored, a failure while storing the answer, a bug) is an error event, so no turn
        task dies unobserved; the chat service already ended a stored answer with its done."""
        try:
            chat, request = self.services.chat, message.request()
            await chat.run_turn(self.principal, self.session_id, request, self.send_event, control)
        except ClientGone:
            logger.debug("client left during a turn; the answer is stored")
        except Exception as exc:
            await self.send_error(failure_of(exc, f"a turn in session {self.session_id}"))

    async def _abandon_turn(self) -> None:
        if self.turn is not None and not self.turn.done():
            self.control.request_stop(self.turn, MessageStatus.INTERRUPTED)
            with contextlib.suppress(asyncio.CancelledError):
                await self.turn

    async def send(self, frame: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(frame)

    async def send_event(self, message_id: str, event: ChatEvent) -> None:
        """The turn's sink (kubechat.chat.service.TurnSink): a socket that is gone is ClientGone."""
        frame = turn_frame(message_id, event, self.request_id if type(event) is Started else None)
        async with self._send_lock:  # not through send(): one await less on the token path
            try:
                await self.ws.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise ClientGone from exc

    async def send_error(self, exc: KubechatError) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.send(ErrorEvent(error=error_body(exc)).model_dump_json())
