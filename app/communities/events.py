"""Channel names and bus messages of live chat.

Each message is published after its commit on its conversation's channel and on its guild's
channel. A guild channel also carries `{"kind": "left", "user_id": ...}` when a member leaves or
is removed, and `{"kind": "deleted"}` when the guild is deleted; a conversation's channel carries
`{"kind": "deleted", "what": "conversation"}` when it is deleted. Streams then end at once.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.communities import models
from app.communities.service import chat

MESSAGE = "message"
LEFT = "left"
DELETED = "deleted"


def conversation_channel(conversation_id: uuid.UUID) -> str:
    return f"chat:conversation:{conversation_id}"


def guild_channel(guild_id: uuid.UUID) -> str:
    return f"chat:guild:{guild_id}"


def message_published(message: models.ChatMessage) -> list[tuple[str, dict[str, Any]]]:
    payload = {"kind": MESSAGE, "message": chat.message_event(message)}
    channels = []
    if message.conversation_id is not None:
        channels.append(conversation_channel(message.conversation_id))
    if message.guild_id is not None:
        channels.append(guild_channel(message.guild_id))
    return [(channel, payload) for channel in channels]


def member_left(guild_id: uuid.UUID, user_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    return guild_channel(guild_id), {"kind": LEFT, "user_id": str(user_id)}


def guild_deleted(guild_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    return guild_channel(guild_id), {"kind": DELETED}


def conversation_deleted(conversation_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    return conversation_channel(conversation_id), {"kind": DELETED, "what": "conversation"}
