"""The cluster HistoryStore: chat sessions and messages in Elasticsearch, shared by every API replica.

It behaves as SQLiteHistoryStore does (tests/conformance/test_history_store.py runs both); what
differs is how that is made safe for several replicas writing at once, without transactions.

Choices worth knowing:

* One index (`kubechat-history` by default, strict mapping), two kinds of entry told apart by a
  `kind` field and a prefix of `_id`, as in the document catalog: a session (`session:<id>`)
  and a message (`message:<id>`, ids are uuid4 hex as in SQLite). One index rather than two
  because a session and its messages are written together (a message bumps its session), one
  mapping and one `ensure_index` keep installation and clean-up simple, and nothing needs the
  two to scale apart. One shard: a refresh then covers a session and its messages together
  (see Visibility), and chat text stays far below what one shard holds (tens of GB).
* Sequence numbers. A session entry carries `last_seq`, the highest number handed out in it.
  Adding messages first reserves numbers by a conditional write of the session
  (`if_seq_no`/`if_primary_term`) that sets `last_seq += n` and `updated_at` together; of
  concurrent writers (any replica) one wins, the others get 409, read again and retry at
  once. The numbers are then the writer's alone: its messages are created with
  `op_type=create`, and a 409 on create can only be its own earlier attempt (a retried
  request). No two messages of a session share a number. A gap is possible only when a
  writer dies (or fails for good) between reserving and creating, or a reservation whose
  answer was lost is retried: pagination and order do not care, since cursors are "after
  seq N".
* start_exchange reserves two adjacent numbers in that one write, then creates the question
  and its empty streaming answer in one `_bulk` request (kubechat.stores.elasticsearch.client's
  `bulk`: items turned away are sent again with back-off). Elasticsearch has no transaction:
  if only the question is stored, it stays (nothing the user said is lost; it reads as a
  question whose answer never started, as after a crash) and the call fails; if only the
  answer is stored, it is deleted again (best effort) and the call fails.
* Answers left `streaming` by a replica that died are not mass-updated on open, as SQLite
  does: another replica may be streaming them right now. Every message write stamps
  `updated_at`, and a live answer is written every second while tokens flow; a `streaming`
  answer not written for `stale_after_s` (10 minutes by default: a silence that long means
  its writer is gone, Triton's default timeout being as long) is *read* as `interrupted`, its
  checkpointed text kept. Nothing is rewritten, so if its writer does finish after all, the
  final status wins.
* Visibility. Reads of one entry are real-time GETs. Writes that a search must see at once
  carry `refresh=wait_for`: session creation, renames, the creation of messages, and an
  answer's final update. The reservation before a creation is not refreshed itself: the
  creation's refresh, later and on the same single shard, makes both visible, so a turn waits
  for one refresh, not two. Streaming checkpoints and
  set_context/set_images/set_tool_calls are not refreshed (a refresh wait would delay the
  tokens): another replica's listing may show an answer's previous checkpoint for up to
  `index.refresh_interval` (set to 1s explicitly, so an idle shard keeps refreshing), and
  the final update makes everything visible.
* delete_session deletes the session's messages (`_delete_by_query`, `refresh=true`), then the
  session with a conditional delete; a message added meanwhile makes that delete fail (409)
  and both are run again. A message whose writer reserved its number before the delete but
  wrote it after is left orphaned: no read returns it (every read checks the session first).
* Errors and retries are kubechat.stores.elasticsearch.client's: 429/502/503/504, timeouts and lost
  connections are retried with exponential back-off and jitter, then StoreUnavailableError;
  anything else is StoreError. Messages that a `_bulk` or `_delete_by_query` could not write or
  delete are StoreUnavailableError when each was turned away or failed inside the cluster
  (5xx), else StoreError. `ping` tries once (it backs `/ready`).
* Cursors are kubechat.core.pagination's, as in SQLite: sessions after a time cursor
  (`<updated_at>:<id>`), messages after a sequence number.
* The store runs on the process's one client (kubechat.stores.open) and leaves closing it to
  its opener.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import SessionNotFoundError
from kubechat.core.pagination import (
    Page,
    page_of,
    parse_seq_cursor,
    parse_time_cursor,
    seq_cursor,
    time_cursor,
)
from kubechat.stores.elasticsearch.client import (
    DEFAULT_RETRIES,
    ONCE,
    BulkAction,
    PartFailure,
    Retries,
    bulk,
    check_by_query,
    partial_failure,
)
from kubechat.stores.elasticsearch.entries import EntryIndex, Stored
from kubechat.stores.errors import StoreError, StoreUnavailableError
from kubechat.stores.history import Message, MessageStatus, Session

logger = logging.getLogger(__name__)

DEFAULT_INDEX: Final = "kubechat-history"
# Bumped when the mapping changes in a way that needs a migration.
SCHEMA_VERSION: Final = 1
# A streaming answer not written for this long is read as interrupted (its writer is gone).
STALE_STREAMING_S: Final = 600.0

_SESSION: Final = "session"
_MESSAGE: Final = "message"
# Conditional writes of a session are retried at once: each round, one writer wins.
_CONFLICT_ATTEMPTS: Final = 20
_SESSION_ORDER: Final = [{"updated_at": "desc"}, {"id": "asc"}]

_KEYWORD: Final = {"type": "keyword"}
_TIME: Final = {"type": "double"}  # epoch seconds, exactly as given: cursors compare them
_STORED_ONLY: Final = {"type": "text", "index": False}
_OPAQUE: Final = {"type": "object", "enabled": False}  # kept in _source, never indexed


def history_index_body(replicas: int | None = None) -> dict[str, Any]:
    """The create-index body of the history index (one shard: see the module docstring)."""
    settings: dict[str, Any] = {"number_of_shards": 1, "refresh_interval": "1s"}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    return {
        "settings": settings,
        "mappings": {
            "dynamic": "strict",
            "_meta": {"kubechat_schema_version": SCHEMA_VERSION},
            "properties": {
                "kind": _KEYWORD,
                "id": _KEYWORD,
                "principal": _KEYWORD,
                "created_at": _TIME,
                "updated_at": _TIME,
                # sessions
                "title": _STORED_ONLY,
                "last_seq": {"type": "long"},
                # messages
                "session_id": _KEYWORD,
                "seq": {"type": "long"},
                "role": _KEYWORD,
                "content": _STORED_ONLY,
                "status": _KEYWORD,
                "model": _KEYWORD,
                "prompt_tokens": {"type": "integer"},
                "completion_tokens": {"type": "integer"},
                "error_code": _KEYWORD,
                "sources": _OPAQUE,
                "images": _OPAQUE,
                "tool_calls": _OPAQUE,
                "attribution": _OPAQUE,
            },
        },
    }


# Fields added after indices were created with the mapping above (ensure_index adds them).
ADDED_FIELDS: dict[str, dict[str, Any]] = {"attribution": _OPAQUE}


def _session_key(session_id: str) -> str:
    return f"{_SESSION}:{session_id}"


def _message_key(message_id: str) -> str:
    return f"{_MESSAGE}:{message_id}"


def _session(source: Mapping[str, Any]) -> Session:
    return Session(
        id=str(source["id"]), principal=str(source["principal"]), title=str(source["title"]),
        created_at=float(source["created_at"]), updated_at=float(source["updated_at"]),
    )  # fmt: skip


def _message_source(message: Message, principal: str) -> dict[str, Any]:
    return {
        "kind": _MESSAGE,
        "id": message.id,
        "session_id": message.session_id,
        "principal": principal,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": message.status.value,
        "model": message.model,
        "created_at": message.created_at,
        "updated_at": message.created_at,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "error_code": message.error_code,
        "sources": message.sources,
        "images": message.images,
        "tool_calls": message.tool_calls,
    }  # fmt: skip  (attribution: only once set_attribution writes it)


class ElasticsearchHistoryStore(EntryIndex):
    """HistoryStore on Elasticsearch (see the module docstring for the choices it makes).

    `ensure_index` must have created the index (kubechat.stores.open calls it).
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        index: str = DEFAULT_INDEX,
        *,
        retries: Retries = DEFAULT_RETRIES,
        stale_after_s: float = STALE_STREAMING_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, index, retries)
        self._stale_after_s = stale_after_s
        self._clock = clock

    async def ensure_index(self, replicas: int | None = None) -> bool:
        """Create the index if it does not exist; False if it did (another replica may have just made it).

        An existing index gets the fields added to the mapping since it was created (its mapping
        is strict): adding a field is the one mapping change Elasticsearch allows in place.
        """
        created = await self._ensure_index(history_index_body(replicas), "chat history")
        if not created:
            added = {name: ADDED_FIELDS[name] for name in ADDED_FIELDS}
            await self._call(
                f"add fields to index {self._index}",
                lambda: self._es.indices.put_mapping(index=self._index, properties=added),
            )
        return created

    async def ping(self) -> None:
        # Once, without back-off: /ready asks often and must answer quickly.
        response = await ONCE.call(
            f"check index {self._index}", lambda: self._es.indices.exists(index=self._index)
        )
        if not response:
            raise StoreError(f"history index {self._index} does not exist")

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(self, principal: str, title: str) -> Session:
        now = self._clock()
        session = Session(uuid.uuid4().hex, principal, title, now, now)
        source = {
            "kind": _SESSION, "id": session.id, "principal": principal, "title": title,
            "created_at": now, "updated_at": now, "last_seq": 0,
        }  # fmt: skip
        what = f"create session {session.id}"
        failures = await self._create_all(what, [(_session_key(session.id), source)])
        if failures:
            raise partial_failure(what, failures, 1, "sessions")
        return session

    async def get_session(self, principal: str, session_id: str) -> Session:
        return _session((await self._session_entry(principal, session_id)).source)

    async def _session_entry(self, principal: str, session_id: str) -> Stored:
        stored = await self._read(f"get session {session_id}", _session_key(session_id))
        # Another principal's session is indistinguishable from a missing one.
        if stored is None or stored.source.get("kind") != _SESSION or stored.source["principal"] != principal:
            raise SessionNotFoundError(f"session {session_id} not found")
        return stored

    async def list_sessions(self, principal: str, limit: int, cursor: str | None) -> Page[Session]:
        body: dict[str, Any] = {"search_after": list(parse_time_cursor(cursor))} if cursor else {}
        response = await self._search(
            f"list sessions of {principal}",
            query={"bool": {"filter": [{"term": {"kind": _SESSION}}, {"term": {"principal": principal}}]}},
            sort=_SESSION_ORDER,
            size=max(limit, 0) + 1,
            **body,
        )
        sessions = [_session(hit["_source"]) for hit in response["hits"]["hits"]]
        return page_of(sessions, limit, lambda last: time_cursor(last.updated_at, last.id))

    async def rename_session(self, principal: str, session_id: str, title: str) -> Session:
        what = f"rename session {session_id}"
        for _ in range(_CONFLICT_ATTEMPTS):
            stored = await self._session_entry(principal, session_id)
            changes = {"title": title, "updated_at": self._clock()}
            if await self._update(
                what, _session_key(session_id), changes, expected=stored, refresh="wait_for"
            ):
                return _session({**stored.source, **changes})
            # Changed since (a message was added) or deleted: read it again.
        raise StoreUnavailableError(f"{what}: other writers kept changing it")

    async def delete_session(self, principal: str, session_id: str) -> None:
        what = f"delete session {session_id}"
        for _ in range(_CONFLICT_ATTEMPTS):
            stored = await self._session_entry(principal, session_id)
            await self._delete_messages(session_id)
            # Only if no message was added since it was read; else its messages go first again.
            if await self._delete(what, _session_key(session_id), expected=stored, refresh="wait_for"):
                return
        raise StoreUnavailableError(f"{what}: other writers kept changing it")

    async def _delete_messages(self, session_id: str) -> None:
        what = f"delete the messages of session {session_id}"
        query = {"bool": {"filter": [{"term": {"kind": _MESSAGE}}, {"term": {"session_id": session_id}}]}}
        response = await self._call(
            what,
            lambda: self._es.delete_by_query(
                index=self._index, query=query, conflicts="proceed", refresh=True
            ),
        )
        check_by_query(what, response.body, "messages")

    # -- messages -----------------------------------------------------------------------------

    async def add_message(
        self,
        principal: str,
        session_id: str,
        role: str,
        content: str,
        *,
        model: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
        prompt_tokens: int = 0,
    ) -> Message:
        seq, now = await self._reserve(principal, session_id, 1)
        message = Message(
            id=uuid.uuid4().hex, session_id=session_id, seq=seq, role=role, content=content,
            status=status, model=model, created_at=now, prompt_tokens=prompt_tokens,
        )  # fmt: skip
        what = f"add a message to session {session_id}"
        failures = await self._create_all(
            what, [(_message_key(message.id), _message_source(message, principal))]
        )
        if failures:
            raise partial_failure(what, failures, 1, "messages")
        return message

    async def start_exchange(
        self,
        principal: str,
        session_id: str,
        content: str,
        *,
        model: str,
        prompt_tokens: int,
        sources: Sequence[Mapping[str, Any]] = (),
        images: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[Message, Message]:
        seq, now = await self._reserve(principal, session_id, 2)
        user = Message(
            id=uuid.uuid4().hex, session_id=session_id, seq=seq, role="user", content=content,
            status=MessageStatus.COMPLETE, model="", created_at=now, images=[dict(i) for i in images],
        )  # fmt: skip
        reply = Message(
            id=uuid.uuid4().hex, session_id=session_id, seq=seq + 1, role="assistant", content="",
            status=MessageStatus.STREAMING, model=model, created_at=now, prompt_tokens=prompt_tokens,
            sources=[dict(s) for s in sources],
        )  # fmt: skip
        what = f"start an exchange in session {session_id}"
        user_key, reply_key = _message_key(user.id), _message_key(reply.id)
        failures = await self._create_all(
            what,
            [(user_key, _message_source(user, principal)), (reply_key, _message_source(reply, principal))],
        )
        if failures:
            failed = {f.key for f in failures}
            if user_key in failed and reply_key not in failed:
                # No answer without its question; a question without an answer is kept.
                try:
                    await self._delete(f"{what}: remove the answer", reply_key, refresh="wait_for")
                except StoreError as exc:
                    logger.warning("%s: could not remove the answer %s: %s", what, reply.id, exc)
            raise partial_failure(what, failures, 2, "messages")
        return user, reply

    async def _reserve(self, principal: str, session_id: str, count: int) -> tuple[int, float]:
        """Take the session's next `count` sequence numbers (and bump it); the first and the time."""
        what = f"number messages of session {session_id}"
        for _ in range(_CONFLICT_ATTEMPTS):
            stored = await self._session_entry(principal, session_id)
            last, now = int(stored.source.get("last_seq", 0)), self._clock()
            changes = {"last_seq": last + count, "updated_at": now}
            # Not refreshed: the creation of the messages that follows refreshes the shard.
            if await self._update(what, _session_key(session_id), changes, expected=stored):
                return last + 1, now
            # Another writer took numbers (or renamed it) since we read it: read again.
        raise StoreUnavailableError(f"{what}: other writers kept changing it")

    async def update_message(
        self,
        message_id: str,
        content: str,
        status: MessageStatus,
        *,
        completion_tokens: int = 0,
        error_code: str = "",
    ) -> None:
        changes = {
            "content": content, "status": status.value, "completion_tokens": completion_tokens,
            "error_code": error_code,
        }  # fmt: skip
        # Checkpoints are frequent and only need to survive; the final state must be listed at once.
        refresh = None if status is MessageStatus.STREAMING else "wait_for"
        await self._update_message(f"update message {message_id}", message_id, changes, refresh)

    async def checkpoint(self, texts: Mapping[str, str]) -> None:
        for message_id, content in texts.items():  # issue 19: one call for the answers streaming
            await self._update_message(
                f"checkpoint message {message_id}", message_id, {"content": content}, None
            )

    async def set_context(
        self, message_id: str, prompt_tokens: int, sources: Sequence[Mapping[str, Any]]
    ) -> None:
        changes = {"prompt_tokens": prompt_tokens, "sources": [dict(s) for s in sources]}
        await self._update_message(f"set the context of message {message_id}", message_id, changes)

    async def set_images(self, message_id: str, images: Sequence[Mapping[str, Any]]) -> None:
        changes = {"images": [dict(i) for i in images]}
        await self._update_message(f"set the images of message {message_id}", message_id, changes)

    async def set_tool_calls(self, message_id: str, calls: Sequence[Mapping[str, Any]]) -> None:
        changes = {"tool_calls": [dict(c) for c in calls]}
        await self._update_message(f"set the tool calls of message {message_id}", message_id, changes)

    async def set_attribution(self, message_id: str, attribution: Sequence[Mapping[str, Any]]) -> None:
        changes = {"attribution": [dict(a) for a in attribution]}
        await self._update_message(f"set the attribution of message {message_id}", message_id, changes)

    async def _update_message(
        self, what: str, message_id: str, changes: Mapping[str, Any], refresh: str | None = None
    ) -> None:
        # A missing message is no error, as in SQLite (its session was deleted meanwhile).
        await self._update(
            what, _message_key(message_id), {**changes, "updated_at": self._clock()}, refresh=refresh
        )

    async def list_messages(
        self, principal: str, session_id: str, limit: int, cursor: str | None
    ) -> Page[Message]:
        body: dict[str, Any] = {"search_after": [parse_seq_cursor(cursor)]} if cursor else {}
        await self._session_entry(principal, session_id)
        messages = await self._messages(principal, session_id, "asc", max(limit, 0) + 1, **body)
        return page_of(messages, limit, lambda last: seq_cursor(last.seq))

    async def recent_messages(self, principal: str, session_id: str, limit: int) -> list[Message]:
        await self._session_entry(principal, session_id)
        return (await self._messages(principal, session_id, "desc", max(limit, 0)))[::-1]

    async def _messages(
        self, principal: str, session_id: str, order: str, size: int, **body: Any
    ) -> list[Message]:
        filters = [
            {"term": {"kind": _MESSAGE}},
            {"term": {"session_id": session_id}},
            {"term": {"principal": principal}},
        ]
        response = await self._search(
            f"list messages of session {session_id}",
            query={"bool": {"filter": filters}},
            sort=[{"seq": order}],
            size=size,
            **body,
        )
        now = self._clock()
        return [self._message(hit["_source"], now) for hit in response["hits"]["hits"]]

    def _message(self, source: Mapping[str, Any], now: float) -> Message:
        status = MessageStatus(source["status"])
        if status is MessageStatus.STREAMING and now - float(source["updated_at"]) > self._stale_after_s:
            status = MessageStatus.INTERRUPTED  # its writer is gone; see the module docstring
        return Message(
            id=str(source["id"]), session_id=str(source["session_id"]), seq=int(source["seq"]),
            role=str(source["role"]), content=str(source["content"]), status=status,
            model=str(source["model"]), created_at=float(source["created_at"]),
            prompt_tokens=int(source["prompt_tokens"]), completion_tokens=int(source["completion_tokens"]),
            error_code=str(source["error_code"]), sources=list(source.get("sources") or []),
            images=list(source.get("images") or []), tool_calls=list(source.get("tool_calls") or []),
            attribution=list(source.get("attribution") or []),
        )  # fmt: skip

    # -- plumbing -----------------------------------------------------------------------------

    async def _create_all(
        self, what: str, entries: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[PartFailure]:
        """Create new entries in one `_bulk` (`op_type=create`, `refresh=wait_for`); those that failed.

        A 409 means the entry exists: its key is fresh, so an earlier attempt of ours (a retried
        request) wrote it.
        """
        actions = [BulkAction("create", key, source, index=self._index) for key, source in entries]
        return await bulk(self._es, what, actions, self._retries, done_status={409}, refresh="wait_for")
