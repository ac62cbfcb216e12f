"""Email verification, and how Lodge sends mail: through a pluggable sender.

LODGE_EMAIL_SENDER names the sender: `console` (the default) writes each message to the
`lodge.email` logger, so a developer copies the token from the server's output; `module:attribute`
names an object of the deployment's own with `async def send(self, message: EmailMessage) -> None`
(an SMTP or provider client), imported once at start.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import models
from app.api.errors import BadUserInput, Conflict

log = logging.getLogger("lodge.email")

TOKEN_PREFIX = "lodge_ev_"
TOKEN_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    body: str


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class ConsoleSender:
    """Writes each message to the log (the default: nothing leaves the machine)."""

    async def send(self, message: EmailMessage) -> None:
        log.info("email to %s: %s\n%s", message.to, message.subject, message.body)


def sender_from_setting(name: str) -> EmailSender:
    if name == "console":
        return ConsoleSender()
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ValueError(f"LODGE_EMAIL_SENDER must be `console` or `module:attribute`, not {name!r}")
    sender: EmailSender = getattr(importlib.import_module(module), attribute)
    return sender


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_verification(session: AsyncSession, *, user: models.User) -> tuple[str, EmailMessage]:
    """A new token for the user's current email, and the message that carries it."""
    if user.email is None:
        raise BadUserInput("this account has no email to verify", field="email")
    if user.email_verified_at is not None:
        raise Conflict("this email is verified already")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        models.EmailVerification(
            user_id=user.id, email=user.email, token_hash=_hash(token), expires_at=datetime.now(UTC) + TOKEN_TTL
        )
    )
    await session.flush()
    body = (
        "Confirm that this address is yours by sending this token to Lodge within 24 hours:\n\n"
        f'    mutation {{ verifyEmail(token: "{token}") {{ emailVerifiedAt }} }}\n\n'
        "If you did not ask for this, ignore this message."
    )
    return token, EmailMessage(to=user.email, subject="Verify your email for Lodge", body=body)


_SPEND = text(
    """
    UPDATE email_verifications SET used_at = now()
    WHERE token_hash = :hash AND used_at IS NULL AND expires_at > now()
    RETURNING user_id, email
    """
)
_VERIFY = text(
    """
    UPDATE users SET email_verified_at = now()
    WHERE id = :user_id AND email = :email AND deleted_at IS NULL
    RETURNING id
    """
)


async def verify(session: AsyncSession, *, token: str) -> uuid.UUID:
    """The user whose email the token verified. The token is spent by the UPDATE that finds it, so
    of two uses one wins; it is refused if spent, expired, or sent to an address the user no longer has."""
    found = (await session.execute(_SPEND, {"hash": _hash(token.strip())})).first()
    if found is None:
        raise BadUserInput("this verification token is not valid (spent, expired or unknown)", field="token")
    user_id, email = found
    if await session.scalar(_VERIFY, {"user_id": user_id, "email": email}) is None:
        raise BadUserInput("the account's email has changed since this token was sent", field="token")
    return uuid.UUID(str(user_id))
