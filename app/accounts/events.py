"""Channels on which the end of a credential is announced, and their messages.

Every websocket listens on its principal's channels (`app.accounts.watchdog`): a user's, a
session's or an API key's. `END` closes it with 4403 at once (the user was deleted, their
permissions shrank, the key was revoked); `CHECK` makes it re-check its own credential and close
only if that no longer holds (a logout or a password change ends some logins of a user, not all).
"""

from __future__ import annotations

import uuid
from typing import Any

# Every announcement of the channels below is repeated here, as {"channel": <its channel>}, for the
# per-process memory of credentials (app.accounts.principals) to forget what ended.
AUTH_CHANGES = "auth:changes"


def login_channel(login_id: uuid.UUID) -> str:
    """An access-token login (refresh-token family): ended when a spent refresh token is reused."""
    return f"auth:login:{login_id}"


def user_channel(user_id: uuid.UUID) -> str:
    return f"auth:user:{user_id}"


def session_channel(session_id: uuid.UUID) -> str:
    return f"auth:session:{session_id}"


def api_key_channel(key_id: uuid.UUID) -> str:
    return f"auth:apikey:{key_id}"


def end(reason: str) -> dict[str, Any]:
    return {"ended": reason}


def check(reason: str) -> dict[str, Any]:
    return {"check": reason}


def ends(message: Any) -> bool:
    """Whether `message` ends every connection on its channel (else: each re-checks)."""
    return not (isinstance(message, dict) and "check" in message)
