"""Sign-up, sign-in and `me` (issue #3 completes accounts)."""

from __future__ import annotations

import strawberry

from app.accounts import models, service
from app.accounts.security import issue_access_token
from app.accounts.types import AuthPayload, User
from app.api.context import Info


@strawberry.input
class RegisterInput:
    email: str
    password: str
    name: str | None = None


def _payload(info: Info, user: models.User) -> AuthPayload:
    deps = info.context.deps
    token = issue_access_token(user.id, secret=deps.secret_key, ttl_seconds=deps.settings.access_token_ttl_seconds)
    return AuthPayload(access_token=token.token, expires_at=token.expires_at, user=User.from_model(user))


@strawberry.type
class AccountsQuery:
    @strawberry.field(description="The signed-in user, or null for anonymous callers.")  # type: ignore[untyped-decorator]
    async def me(self, info: Info) -> User | None:
        user_id = await info.context.user_id()
        if user_id is None:
            return None
        user = await service.get_active_user(info.context.session, user_id=user_id)
        return User.from_model(user) if user else None


@strawberry.type
class AccountsMutation:
    @strawberry.mutation
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        user = await service.create_user(
            info.context.session, email=input.email, password=input.password, name=input.name
        )
        return _payload(info, user)

    @strawberry.mutation
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        user = await service.authenticate(info.context.session, email=email, password=password)
        return _payload(info, user)
