"""Password hashing (argon2id) and access tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
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


# Verified tokens, so a client's next request with the same token skips the signature check and
# the claims' parsing (a client sends one token many times until it expires). Only the signature
# and expiry are remembered: whether the login is still live is asked on every request
# (`credentials.login_is_live`). Keyed by a digest under the secret, so no token sits in memory.
VERIFIED_TOKENS_MAX = 10_000
_verified: OrderedDict[bytes, TokenClaims] = OrderedDict()


def decode_access_token(token: str, *, secret: str) -> TokenClaims | None:
    """Claims of a valid, unexpired access token; None for anything else."""
    key = hashlib.blake2b(token.encode(), key=hashlib.blake2b(secret.encode()).digest(), digest_size=32).digest()
    claims = _verified.get(key)
    if claims is not None:
        if claims.expires_at > datetime.now(UTC):
            _verified.move_to_end(key)
            return claims
        del _verified[key]
        return None
    claims = _verify(token, secret)
    if claims is not None:
        _verified[key] = claims
        if len(_verified) > VERIFIED_TOKENS_MAX:
            _verified.popitem(last=False)
    return claims


def _verify(token: str, secret: str) -> TokenClaims | None:
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
