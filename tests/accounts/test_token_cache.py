"""Verified access tokens are remembered, never beyond what verifying them again would say."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from app.accounts import security

SECRET = "a-secret-for-the-token-cache-test-" + uuid.uuid4().hex


def test_a_remembered_token_is_the_same_answer_as_verifying_it() -> None:
    token = security.issue_access_token(uuid.uuid4(), login_id=uuid.uuid4(), secret=SECRET, ttl_seconds=300).token
    first = security.decode_access_token(token, secret=SECRET)
    assert first is not None
    assert security.decode_access_token(token, secret=SECRET) is first  # from memory
    # Another secret (another deployment, a rotated key) does not accept it, remembered or not.
    assert security.decode_access_token(token, secret=SECRET + "-rotated") is None
    # A token altered by one character is checked anew, and refused.
    assert (
        security.decode_access_token(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], secret=SECRET) is None
    )


def test_a_remembered_token_expires_when_its_claims_say() -> None:
    token = security.issue_access_token(uuid.uuid4(), login_id=uuid.uuid4(), secret=SECRET, ttl_seconds=300).token
    claims = security.decode_access_token(token, secret=SECRET)
    assert claims is not None
    # Age the remembered claims as if five minutes had passed (no test waits for a clock).
    [key] = [k for k, v in security._verified.items() if v is claims]
    security._verified[key] = dataclasses.replace(claims, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert security.decode_access_token(token, secret=SECRET) is None
    assert key not in security._verified


def test_the_memory_is_bounded() -> None:
    for _ in range(security.VERIFIED_TOKENS_MAX + 10):
        token = security.issue_access_token(uuid.uuid4(), login_id=uuid.uuid4(), secret=SECRET, ttl_seconds=300).token
        assert security.decode_access_token(token, secret=SECRET) is not None
    assert len(security._verified) == security.VERIFIED_TOKENS_MAX
