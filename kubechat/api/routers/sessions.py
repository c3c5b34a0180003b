"""Chat sessions and their messages, per principal, with cursor pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.events import MessageOut, SessionOut
from kubechat.api.routing import ApiRoute
from kubechat.core.errors import (
    InvalidRequestError,
    SessionNotFoundError,
    StorageUnavailableError,
    UnauthenticatedError,
)

router = APIRouter(prefix="/sessions", tags=["sessions"], route_class=ApiRoute)

# Every route: a key, and the history store. `invalid_request` (400) is a cursor that does not parse.
LISTING = error_responses(UnauthenticatedError, StorageUnavailableError, InvalidRequestError)
ONE_SESSION = error_responses(UnauthenticatedError, StorageUnavailableError, SessionNotFoundError)
MESSAGES = error_responses(
    UnauthenticatedError, StorageUnavailableError, SessionNotFoundError, InvalidRequestError
)

Limit = Annotated[int, Query(ge=1, le=200)]
Title = Annotated[str, Field(min_length=1, max_length=200)]


class SessionCreate(BaseModel):
    title: Title = "New chat"


class SessionRename(BaseModel):
    title: Title


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


@router.post("", status_code=status.HTTP_201_CREATED, responses=LISTING)
async def create_session(body: SessionCreate, services: ServicesDep, principal: PrincipalDep) -> SessionOut:
    return SessionOut.of(await services.store.create_session(principal, body.title))


@router.get("", responses=LISTING)
async def list_sessions(
    services: ServicesDep, principal: PrincipalDep, limit: Limit = 50, cursor: str | None = None
) -> SessionPage:
    page = await services.store.list_sessions(principal, limit, cursor)
    return SessionPage(items=[SessionOut.of(s) for s in page.items], next_cursor=page.next_cursor)


@router.get("/{session_id}", responses=ONE_SESSION)
async def get_session(session_id: str, services: ServicesDep, principal: PrincipalDep) -> SessionOut:
    return SessionOut.of(await services.store.get_session(principal, session_id))


@router.patch("/{session_id}", responses=ONE_SESSION)
async def rename_session(
    session_id: str, body: SessionRename, services: ServicesDep, principal: PrincipalDep
) -> SessionOut:
    return SessionOut.of(await services.store.rename_session(principal, session_id, body.title))


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ONE_SESSION)
async def delete_session(session_id: str, services: ServicesDep, principal: PrincipalDep) -> None:
    await services.store.delete_session(principal, session_id)


@router.get("/{session_id}/messages", responses=MESSAGES)
async def list_messages(
    session_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 50,
    cursor: str | None = None,
) -> MessagePage:
    page = await services.store.list_messages(principal, session_id, limit, cursor)
    return MessagePage(items=[MessageOut.of(m) for m in page.items], next_cursor=page.next_cursor)
