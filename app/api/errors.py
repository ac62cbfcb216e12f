"""Errors clients can act on. Each carries one `extensions.code` from API.md."""

from __future__ import annotations

from typing import Any

BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"
RATE_LIMITED = "RATE_LIMITED"
INTERNAL = "INTERNAL"


class LodgeError(Exception):
    """Raised by services and resolvers; shown to the client as is, with `extensions.code`."""

    code = INTERNAL

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class BadUserInput(LodgeError):
    code = BAD_USER_INPUT


class Unauthenticated(LodgeError):
    code = UNAUTHENTICATED


class Forbidden(LodgeError):
    code = FORBIDDEN


class NotFound(LodgeError):
    code = NOT_FOUND


class Conflict(LodgeError):
    code = CONFLICT
