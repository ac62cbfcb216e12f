"""Password hashing (argon2id) and access tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.observability import metrics

_hasher = PasswordHasher()
# Verifying against this when the email is unknown keeps the response time the same.
_DUMMY_HASH = _hasher.hash("lodge-timing-equaliser")
ALGORITHM = "HS256"


async def hash_password(password: str) -> str:
    metrics.PASSWORD_HASHES.labels("hash").inc()
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    metrics.PASSWORD_HASHES.labels("verify").inc()
    return await asyncio.to_thread(verify)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    expires_at: datetime
    # The login (refresh-token family) the token was issued for: logging out of it ends the token.
    # None only for tokens of an older Lodge, which expire within their short lifetime.
    login_id: uuid.UUID | None = None


def issue_access_token(user_id: uuid.UUID, *, login_id: uuid.UUID, secret: str, ttl_seconds: int) -> AccessToken:
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=ttl_seconds)
    claims = {
        "sub": str(user_id),
        "fam": str(login_id),
        "iat": now,
        "exp": expires_at,
        "typ": "access",
        "jti": uuid.uuid4().hex,
    }
    return AccessToken(token=jwt.encode(claims, secret, algorithm=ALGORITHM), expires_at=expires_at)


def decode_access_token(token: str, *, secret: str) -> TokenClaims | None:
    """Claims of a valid, unexpired access token; None for anything else."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
        if claims.get("typ") != "access":
            return None
        login = claims.get("fam")
        return TokenClaims(
            user_id=uuid.UUID(claims["sub"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            login_id=uuid.UUID(login) if isinstance(login, str) else None,
        )
    except (jwt.PyJWTError, ValueError):
        return None
