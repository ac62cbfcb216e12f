"""Chat conversations and messages. Functions flush; the caller owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import NotFound
from app.api.validation import bounded_text, required_text
from app.communities import models

MAX_MESSAGE = 4000


async def create_conversation(
    session: AsyncSession, *, user_id: uuid.UUID, title: str | None, guild_id: uuid.UUID | None = None
) -> models.ChatConversation:
    conversation = models.ChatConversation(user_id=user_id, title=bounded_text(title, "title"), guild_id=guild_id)
    session.add(conversation)
    await session.flush()
    await session.refresh(conversation)
    return conversation


async def list_conversations(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
    guild_id: uuid.UUID | None = None,
) -> tuple[Sequence[models.ChatConversation], int]:
    """The user's, newest first (those about `guild_id` only, if given)."""
    c = models.ChatConversation
    wanted = [col(c.user_id) == user_id]
    if guild_id is not None:
        wanted.append(col(c.guild_id) == guild_id)
    query = select(c).where(*wanted)
    if before is not None:
        query = query.where(tuple_(col(c.created_at), col(c.id)) < tuple_(*before))
    rows = (await session.scalars(query.order_by(col(c.created_at).desc(), col(c.id).desc()).limit(limit + 1))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).where(*wanted)) or 0
    return rows, total


async def rename_conversation(
    session: AsyncSession, *, conversation: models.ChatConversation, title: str | None
) -> models.ChatConversation:
    conversation.title = bounded_text(title, "title")
    await session.flush()
    await session.refresh(conversation)  # updated_at, kept by the trigger
    return conversation


async def delete_conversation(session: AsyncSession, *, conversation: models.ChatConversation) -> None:
    """The conversation and its messages (ON DELETE CASCADE), those also posted in a guild included:
    the owner's deletion takes back what they wrote there."""
    await session.delete(conversation)
    await session.flush()


async def get_conversation_or_raise(session: AsyncSession, *, conversation_id: uuid.UUID) -> models.ChatConversation:
    conversation = await session.get(models.ChatConversation, conversation_id)
    if conversation is None:
        raise NotFound("conversation not found", id=str(conversation_id))
    return conversation


async def post_message(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    guild_id: uuid.UUID | None,
    text: str,
) -> models.ChatMessage:
    body = required_text(text, "text", limit=MAX_MESSAGE)
    # Posts to one conversation or guild take turns until commit, so that (created_at, id) order is
    # commit order and a client paging with `after:` never skips a message committed late.
    if conversation_id is not None:
        # Touching the row takes its lock, and makes updatedAt the time of the last message.
        table = models.ChatConversation.__table__  # type: ignore[attr-defined]
        await session.execute(table.update().where(table.c.id == conversation_id).values(title=table.c.title))
    if guild_id is not None:
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"chat:{guild_id}", 0))))
    message = models.ChatMessage(user_id=user_id, conversation_id=conversation_id, guild_id=guild_id, text=body)
    session.add(message)
    await session.flush()
    await session.refresh(message)
    return message


def messages_query(
    *,
    conversation_id: uuid.UUID | None,
    guild_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    backwards: bool,
) -> Any:
    """Oldest first; `backwards` reads the newest first (for `last`), the caller reverses the page."""
    m = models.ChatMessage
    query = select(m)
    if conversation_id is not None:
        query = query.where(col(m.conversation_id) == conversation_id)
    if guild_id is not None:
        query = query.where(col(m.guild_id) == guild_id)
    position = tuple_(col(m.created_at), col(m.id))
    if after is not None:
        query = query.where(position > tuple_(*after))
    if before is not None:
        query = query.where(position < tuple_(*before))
    order = (col(m.created_at).desc(), col(m.id).desc()) if backwards else (col(m.created_at), col(m.id))
    return query.order_by(*order).limit(limit + 1)


async def list_messages(
    session: AsyncSession,
    *,
    conversation_id: uuid.UUID | None,
    guild_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    backwards: bool,
    count: bool,
) -> tuple[Sequence[models.ChatMessage], int]:
    query = messages_query(
        conversation_id=conversation_id, guild_id=guild_id, after=after, before=before, limit=limit, backwards=backwards
    )
    rows = (await session.scalars(query)).all()
    total = 0
    if count:
        counted = messages_query(
            conversation_id=conversation_id, guild_id=guild_id, after=None, before=None, limit=0, backwards=False
        )
        total = (
            await session.scalar(select(func.count()).select_from(counted.limit(None).order_by(None).subquery())) or 0
        )
    return rows, total


def message_event(message: models.ChatMessage) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "guild_id": str(message.guild_id) if message.guild_id else None,
        "user_id": str(message.user_id) if message.user_id else None,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
    }


def message_from_event(payload: dict[str, Any]) -> models.ChatMessage:
    def uid(key: str) -> uuid.UUID | None:
        return uuid.UUID(payload[key]) if payload.get(key) else None

    return models.ChatMessage(
        id=uuid.UUID(payload["id"]),
        conversation_id=uid("conversation_id"),
        guild_id=uid("guild_id"),
        user_id=uid("user_id"),
        text=payload["text"],
        created_at=datetime.fromisoformat(payload["created_at"]),
    )
