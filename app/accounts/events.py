"""Channels on which the end of a credential is announced (websockets close with 4403 on them)."""

from __future__ import annotations

import uuid


def user_channel(user_id: uuid.UUID) -> str:
    return f"auth:user:{user_id}"


def session_channel(session_id: uuid.UUID) -> str:
    return f"auth:session:{session_id}"
