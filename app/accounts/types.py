"""GraphQL types of the accounts domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.accounts import models
from app.api.context import Info
from app.api.pagination import Connection
from app.api.scalars import utc

if TYPE_CHECKING:
    from app.logs.types import Project


@strawberry.type(name="User")
class User:
    id: strawberry.ID
    email: str | None
    name: str | None
    username: str | None
    global_name: str | None
    discord_id: str | None
    clerk_id: str | None
    avatar_url: str | None
    is_active: bool
    email_verified_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime
    user_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, row: models.User) -> User:
        return cls(
            id=strawberry.ID(str(row.id)),
            email=row.email,
            name=row.name,
            username=row.username,
            global_name=row.global_name,
            discord_id=row.discord_id,
            clerk_id=row.clerk_id,
            avatar_url=row.avatar_url,
            is_active=row.is_active,
            email_verified_at=utc(row.email_verified_at),
            last_login_at=utc(row.last_login_at),
            created_at=utc(row.created_at),  # type: ignore[arg-type]
            updated_at=utc(row.updated_at),  # type: ignore[arg-type]
            user_id=row.id,
        )

    @strawberry.field
    async def projects(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Project, strawberry.lazy("app.logs.types")]]:
        from app.logs.resolvers import projects_of

        return await projects_of(info, owner_id=self.user_id, first=first, after=after)


@strawberry.type
class AuthPayload:
    access_token: str
    expires_at: datetime
    user: User
