"""Chat sessions and their messages, per principal, with cursor pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from kubechat.api.dependencies import PrincipalDep, ServicesDep
from kubechat.api.errors import error_responses
from kubechat.api.events import MessageOut, SessionOut
from kubechat.api.pages import Cursor, ItemPage, Limit
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

Title = Annotated[str, Field(min_length=1, max_length=200)]


class SessionCreate(BaseModel):
    title: Title = "New chat"


class SessionRename(BaseModel):
    title: Title


class SessionPage(ItemPage[SessionOut]):
    """Sessions, newest first."""


class MessagePage(ItemPage[MessageOut]):
    """A session's messages, oldest first."""


@router.post("", status_code=status.HTTP_201_CREATED, responses=LISTING)
async def create_session(body: SessionCreate, services: ServicesDep, principal: PrincipalDep) -> SessionOut:
    return SessionOut.of(await services.store.create_session(principal, body.title))


@router.get("", responses=LISTING)
async def list_sessions(
    services: ServicesDep, principal: PrincipalDep, limit: Limit = 50, cursor: Cursor = None
) -> SessionPage:
    return SessionPage.of(await services.store.list_sessions(principal, limit, cursor), SessionOut.of)


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
    cursor: Cursor = None,
) -> MessagePage:
    page = await services.store.list_messages(principal, session_id, limit, cursor)
    return MessagePage.of(page, MessageOut.of)
