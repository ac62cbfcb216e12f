"""Sign-in with an external identity provider's token (OIDC; Clerk's session tokens are such JWTs).

The token is verified against the provider's published keys (JWKS, fetched by pyjwt's PyJWKClient
and cached), its issuer, expiry and, when configured, audience. Its `sub` is the user's `clerkId`:
the user who has it signs in; otherwise a live user with the token's email, if the provider says
it is verified and that user has no external identity yet, is linked; otherwise a user is created.
A suspended or deleted user does not come back by signing in.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts import models
from app.accounts.service import normalise_email
from app.api.errors import INTERNAL, Conflict, LodgeError, Unauthenticated
from app.settings import Settings

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
MAX_SUBJECT = 255


class ProviderUnavailable(LodgeError):
    code = INTERNAL


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str | None  # only when the provider says it is verified
    first_name: str | None
    last_name: str | None


class IdentityProvider:
    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str,
        audience: str | None,
        leeway_seconds: int = 30,
        refresh_cooldown_seconds: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        # Keys are cached for an hour; a token naming a key id not seen yet makes it fetch the set
        # again, at most once per cooldown (tokens with made-up key ids cannot flood the provider).
        self._keys = jwt.PyJWKClient(
            jwks_url, cache_keys=True, lifespan=3600, timeout=10, cooldown_duration=refresh_cooldown_seconds
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityProvider | None:
        if not settings.oidc_issuer:
            return None
        issuer = settings.oidc_issuer  # compared exactly: some providers' issuers end with "/"
        jwks = settings.oidc_jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json"
        return cls(
            issuer=issuer,
            jwks_url=jwks,
            audience=settings.oidc_audience,
            refresh_cooldown_seconds=settings.oidc_refresh_cooldown_seconds,
        )

    async def verify(self, token: str) -> Identity:
        try:
            # The fetch is blocking I/O (urllib): off the event loop.
            key = await asyncio.to_thread(self._keys.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise ProviderUnavailable(
                "the identity provider's keys could not be fetched; try again", retryable=True
            ) from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise Unauthenticated("the identity token is not valid") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the identity token has expired") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            # A header naming another algorithm than its key's makes pyjwt raise TypeError: still
            # the client's token that does not verify, not a server error.
            raise Unauthenticated("the identity token is not valid") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
            raise Unauthenticated("the identity token names no subject")
        email = claims.get("email")
        verified = claims.get("email_verified") is True
        return Identity(
            subject=subject,
            email=_email(email) if verified else None,
            first_name=_text(claims.get("given_name")),
            last_name=_text(claims.get("family_name")),
        )


def _email(value: Any) -> str | None:
    """The token's email as Lodge keeps emails, or None if Lodge would not take it."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return normalise_email(value)
    except LodgeError:
        return None


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


_LINK = text(
    """
    UPDATE users SET clerk_id = :subject, last_login_at = now()
    -- Only an address Lodge has seen proven (verifyEmail): anyone may register any address, and
    -- linking to an unproven one would sign the provider's user into the registrant's account.
    WHERE email = :email AND deleted_at IS NULL AND clerk_id IS NULL AND email_verified_at IS NOT NULL
    RETURNING id
    """
)
_CREATE = text(
    """
    INSERT INTO users (clerk_id, email, first_name, last_name, email_verified_at, last_login_at)
    VALUES (CAST(:subject AS text), CAST(:email AS text), CAST(:first_name AS text), CAST(:last_name AS text),
            CASE WHEN CAST(:email AS text) IS NULL THEN NULL ELSE now() END, now())
    ON CONFLICT (clerk_id) DO NOTHING
    RETURNING id
    """
)


async def sign_in(session: AsyncSession, identity: Identity) -> models.User:
    """The user this identity signs in as: found by `clerkId`, linked by verified email, or created."""
    users = models.User
    for _ in range(2):  # a concurrent first sign-in of the same subject may create it first
        user = (await session.execute(select(users).where(col(users.clerk_id) == identity.subject))).scalars().first()
        if user is not None:
            if user.deleted_at is not None or not user.is_active:
                raise Unauthenticated("this account is suspended or deleted")
            await session.execute(text("UPDATE users SET last_login_at = now() WHERE id = :id"), {"id": user.id})
            await session.refresh(user)
            return user
        params = {
            "subject": identity.subject,
            "email": identity.email,
            "first_name": identity.first_name,
            "last_name": identity.last_name,
        }
        if identity.email is not None:
            linked = await session.scalar(_LINK, params)
            if linked is not None:
                return await _user(session, linked)
        try:
            async with session.begin_nested():
                created = await session.scalar(_CREATE, params)
        except IntegrityError:
            # The email belongs to a live user already linked to another identity, or one whose
            # address Lodge has not seen proven: they verify it (verifyEmail) first.
            raise Conflict(
                "another account has this email: sign in to it and verify the address (verifyEmail) first",
                field="email",
            ) from None
        if created is not None:
            return await _user(session, created)
    raise Conflict("this identity is being signed in concurrently; try again", retryable=True)


async def _user(session: AsyncSession, user_id: uuid.UUID) -> models.User:
    user = await session.get(models.User, user_id, populate_existing=True)
    assert user is not None
    if not user.is_active:
        raise Unauthenticated("this account is suspended or deleted")
    return user
