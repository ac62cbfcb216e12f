"""GraphQL types of the accounts domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.accounts import authentication, models, roles
from app.accounts.permissions import permits
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.lengths import max_length
from app.api.pagination import Connection
from app.api.scalars import utc
from app.api.validation import MAX_DESCRIPTION, MAX_EMAIL, MAX_EXTERNAL_ID, MAX_KEY, MAX_NAME, MAX_PASSWORD, MAX_URL

if TYPE_CHECKING:
    from app.communities.types import Guild
    from app.logs.types import Project
    from app.vendors.types import BillingSubscription, Vendor
    from app.workflows.types import WorkflowConnection, WorkflowStatus


PRIVATE = "Shown to the user themself and to `users:admin` only (null for anyone else)."


# Who sees a user's private fields: the user themself, or `users:admin`.
USER_PRIVATE = c.Rule(owner="id", permissions=("users:admin",))
_MASKED = c.Masked(USER_PRIVATE)


@c.table(
    models.User,
    email=_MASKED,
    discord_id=_MASKED,
    clerk_id=_MASKED,
    first_name=_MASKED,
    last_name=_MASKED,
    email_verified_at=_MASKED,
    last_login_at=_MASKED,
    roles=c.Children(
        "Role", order=lambda t: f"{t}.name", via=("user_roles", "user_id", "role_id"), visible=USER_PRIVATE
    ),
)
@strawberry.type(name="User")
class User:
    # Public: what anyone who meets this user (a vendor's owner, a guild member, a chat author) sees.
    id: strawberry.ID
    name: str | None
    username: str | None
    global_name: str | None
    avatar_url: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    user_id: strawberry.Private[uuid.UUID]
    row: strawberry.Private[models.User]  # for the private fields below
    own: strawberry.Private[bool]  # handed to the user themself (login, register, refresh)

    @classmethod
    def from_model(cls, row: models.User, *, own: bool = False) -> User:
        return cls(
            own=own,
            id=strawberry.ID(str(row.id)),
            name=row.name,
            username=row.username,
            global_name=row.global_name,
            avatar_url=row.avatar_url,
            is_active=row.is_active,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            user_id=row.id,
            row=row,
        )

    async def _private(self, info: Info) -> bool:
        """Whether the caller may see this user's private fields: the user themself or `users:admin`.

        Guild members, analysis authors and chat participants are users other people see."""
        return not self.own and not await permits(info.context, USER_PRIVATE, self.user_id)

    # Private: the user themself and `users:admin` see these; anyone else gets null.
    @strawberry.field(description=PRIVATE)
    async def email(self, info: Info) -> str | None:
        return None if await self._private(info) else self.row.email

    @strawberry.field(description=PRIVATE)
    async def discord_id(self, info: Info) -> str | None:
        return None if await self._private(info) else self.row.discord_id

    @strawberry.field(description=PRIVATE)
    async def clerk_id(self, info: Info) -> str | None:
        return None if await self._private(info) else self.row.clerk_id

    @strawberry.field(description=PRIVATE)
    async def first_name(self, info: Info) -> str | None:
        return None if await self._private(info) else self.row.first_name

    @strawberry.field(description=PRIVATE)
    async def last_name(self, info: Info) -> str | None:
        return None if await self._private(info) else self.row.last_name

    @strawberry.field(description=PRIVATE)
    async def email_verified_at(self, info: Info) -> datetime | None:
        return None if await self._private(info) else utc(self.row.email_verified_at)

    @strawberry.field(description=PRIVATE)
    async def last_login_at(self, info: Info) -> datetime | None:
        return None if await self._private(info) else utc(self.row.last_login_at)

    @strawberry.field(description="Platform roles; shown to the user themself and to `users:admin` only.")
    async def roles(self, info: Info) -> list[Role]:
        if await self._private(info):
            return []
        roles = info.context.loaders.through(models.UserRole, "user_id", "role_id", models.Role, order="name")
        rows = await roles.load(self.user_id)
        return [Role.from_model(row) for row in rows]

    @strawberry.field(
        description="Platform roles with when and by whom each was assigned; the user themself and `users:admin` only."
    )
    async def role_assignments(self, info: Info) -> list[RoleAssignment]:
        if await self._private(info):
            return []
        loader = info.context.loaders.batch(roles.assignments_of_users)
        return [
            RoleAssignment(
                role=Role.from_model(role),
                assigned_at=utc(link.assigned_at),
                assigned_by_id=link.assigned_by,
            )
            for link, role in await loader.load(self.user_id)
        ]

    @strawberry.field
    async def projects(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Project, strawberry.lazy("app.logs.types")]]:
        from app.logs.reads import projects_of

        return await projects_of(info, owner_id=self.user_id, first=first, after=after)

    @strawberry.field(
        description="Guilds the user is a member of: all of them for the user, `users:admin` and `guilds:write`; "
        "for anyone else, the guilds both belong to."
    )
    async def guilds(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Guild, strawberry.lazy("app.communities.types")]]:
        from app.communities.reads import guilds_of

        return await guilds_of(info, user_id=self.user_id, first=first, after=after)

    @strawberry.field(description="The user's workflows that the caller may see, newest first.")
    async def workflows(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: Annotated[WorkflowStatus, strawberry.lazy("app.workflows.types")] | None = None,
    ) -> Annotated[WorkflowConnection, strawberry.lazy("app.workflows.types")]:
        from app.workflows.reads import workflows_page
        from app.workflows.service.workflows import WorkflowFilter

        spec = WorkflowFilter(owner_id=self.user_id, status=status.value if status else None)
        return await workflows_page(info, spec, first=first, after=after)

    @strawberry.field(description="The user's vendors, newest first (vendors are public).")
    async def vendors(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Vendor, strawberry.lazy("app.vendors.types")]]:
        from app.vendors.reads import vendors_page

        return await vendors_page(info, owner_id=self.user_id, first=first, after=after)

    @strawberry.field(
        description="Newest first; shown to the user themself, `users:admin` and `billing:write` only (others "
        "get an empty list)."
    )
    async def billing_subscriptions(
        self, info: Info
    ) -> list[Annotated[BillingSubscription, strawberry.lazy("app.vendors.types")]]:
        from app.vendors.reads import billing_subscriptions_of

        return await billing_subscriptions_of(info, user_id=self.user_id)


async def load_user(info: Info, user_id: uuid.UUID | None) -> User | None:
    """The user `user_id` through the request's loader, for every product's fields that point at a
    user (owners, authors, actors). None for None, or for a row that is gone."""
    if user_id is None:
        return None
    row = await info.context.loaders.by_id(models.User).load(user_id)
    return None if row is None else User.from_model(row)


async def load_owner(info: Info, user_id: uuid.UUID) -> User:
    """`load_user` along a NOT NULL foreign key: the row is there."""
    user = await load_user(info, user_id)
    assert user is not None
    return user


@c.table(models.Role)
@strawberry.type(name="Role")
class Role:
    id: strawberry.ID
    name: str
    description: str | None
    permissions: list[str]

    @classmethod
    def from_model(cls, row: models.Role) -> Role:
        return cls(
            id=strawberry.ID(str(row.id)), name=row.name, description=row.description, permissions=list(row.permissions)
        )


@strawberry.type(description="A role a user holds: when and by whom it was assigned.")
class RoleAssignment:
    role: Role
    assigned_at: datetime
    assigned_by_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(
        description="Who assigned it (null when Lodge did, e.g. `lodge create-user`, or that user is gone)."
    )
    async def assigned_by(self, info: Info) -> User | None:
        if self.assigned_by_id is None:
            return None
        row = await info.context.loaders.by_id(models.User).load(self.assigned_by_id)
        return User.from_model(row) if row is not None and row.deleted_at is None else None


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str = strawberry.field(description="Single use: `refresh` rotates it.")
    expires_at: datetime = strawberry.field(description="When the access token expires.")
    user: User


@strawberry.type(name="Session")
class Session:
    id: strawberry.ID
    expires_at: datetime
    created_at: datetime
    user_id: strawberry.Private[uuid.UUID]
    session_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, row: models.Session) -> Session:
        return cls(
            id=strawberry.ID(str(row.id)),
            expires_at=utc(row.expires_at),
            created_at=utc(row.created_at),
            user_id=row.user_id,
            session_id=row.id,
        )

    @strawberry.field(description="Whether this request is authenticated by this session (depends on who asks).")
    async def current(self, info: Info) -> bool:
        viewer = await authentication.viewer(info.context)
        return viewer is not None and viewer.session_id == self.session_id

    @strawberry.field
    async def user(self, info: Info) -> User:
        row = await info.context.loaders.by_id(models.User).load(self.user_id)
        assert row is not None
        return User.from_model(row)


@strawberry.type
class SessionPayload:
    token: str = strawberry.field(description="Shown once; use it as `Authorization: Bearer <token>`.")
    session: Session


@strawberry.input
class RegisterInput:
    email: str = strawberry.field(metadata=max_length(MAX_EMAIL))
    password: str = strawberry.field(metadata=max_length(MAX_PASSWORD))
    name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))


@strawberry.input
class UpdateMeInput:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    first_name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    last_name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    username: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    global_name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    avatar_url: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_URL))
    email: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_EMAIL))
    password: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_PASSWORD))
    current_password: str | None = strawberry.field(
        default=None, description="Needed to change the email or the password.", metadata=max_length(MAX_PASSWORD)
    )


@strawberry.input
class DiscordUserInput:
    discord_id: str = strawberry.field(metadata=max_length(MAX_EXTERNAL_ID))
    username: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    global_name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    avatar_url: str | None = strawberry.field(default=None, metadata=max_length(MAX_URL))


@strawberry.input
class ClerkUserInput:
    clerk_id: str = strawberry.field(metadata=max_length(MAX_EXTERNAL_ID))
    email: str | None = strawberry.field(default=None, metadata=max_length(MAX_EMAIL))
    first_name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    last_name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))


@strawberry.input
class RoleInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
    permissions: list[str] = strawberry.field(metadata=max_length(MAX_KEY))


@strawberry.input(description="What changes in a role; a field left out (or null) stays as it is.")
class RoleUpdate:
    name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
    permissions: list[str] | None = strawberry.field(default=None, metadata=max_length(MAX_KEY))
