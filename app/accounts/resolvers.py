"""Sign-up and sign-in, tokens and sessions, users, Discord and Clerk identities, roles."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from app.accounts import authentication, credentials, deletion, email, models, oidc, roles, service
from app.accounts.events import api_key_channel, check, end, login_channel, session_channel, user_channel
from app.accounts.permissions import has_permission, require_can_grant, require_permission
from app.accounts.security import issue_access_token
from app.accounts.types import (
    USER_PRIVATE,
    AuthPayload,
    ClerkUserInput,
    DiscordUserInput,
    RegisterInput,
    Role,
    RoleInput,
    RoleUpdate,
    Session,
    SessionPayload,
    UpdateMeInput,
    User,
)
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import BadUserInput, Forbidden, NotFound
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    paginate,
)
from app.api.ratelimit import limit_sign_in
from app.api.validation import MAX_EXTERNAL_ID, like_pattern, parse_id
from app.audit.recorder import audited, note_changes, snapshot

USER_CURSOR = "user"
SESSION_CURSOR = "session"
LOOKUP = "users:lookup"  # a bot finding the user behind a Discord id

c.root("Query.roles", c.Rows("Role", order=lambda t: f"{t}.name", guard=c.Rule(permissions=("users:admin",))))
c.root("Query.me", c.ByViewer("User", where=lambda t: f"{t}.deleted_at IS NULL AND {t}.is_active"))
c.root(
    "Query.user",
    c.ById(
        "User",
        bind=parse_id,
        where=lambda t: f"{t}.deleted_at IS NULL",
        guard=USER_PRIVATE,  # yourself, or users:admin: else the resolver's UNAUTHENTICATED or FORBIDDEN
    ),
)
c.root(
    "Query.users",
    c.Connection(
        "User",
        order=c.Keyset("created_at", "id", USER_CURSOR, descending=False),
        where=lambda t: f"{t}.deleted_at IS NULL",
        filters={
            "search": c.Filter(
                lambda t, like: (
                    "("
                    + " OR ".join(
                        f"{t}.{column} ILIKE {like}::text" for column in ("email", "name", "username", "global_name")
                    )
                    + ")"
                ),
                bind=like_pattern,
                truthy=True,
            )
        },
        guard=c.Rule(permissions=("users:admin",)),
    ),
)

# An identity provider's JWT: a few kilobytes at most.
MAX_ID_TOKEN = 16_384


async def _auth_payload(info: Info, user: models.User) -> AuthPayload:
    deps = info.context.deps
    login_id = uuid.uuid4()  # the login: its refresh tokens and its access tokens end together
    token = issue_access_token(
        user.id, login_id=login_id, secret=deps.secret_key, ttl_seconds=deps.settings.access_token_ttl_seconds
    )
    refresh = await credentials.issue_refresh_token(
        info.context.session, user_id=user.id, ttl_seconds=deps.settings.refresh_token_ttl_seconds, family_id=login_id
    )
    return AuthPayload(
        access_token=token.token,
        refresh_token=refresh,
        expires_at=token.expires_at,
        user=User.from_model(user, own=True),
    )


async def _visible_user(info: Info, user_id: uuid.UUID) -> models.User:
    """Yourself, or anyone with `users:admin`."""
    await require_permission(info.context, "users:admin", owner_id=user_id)
    return await service.get_user_or_raise(info.context.session, user_id=user_id)


async def _administered_user(info: Info, id: strawberry.ID) -> models.User:
    """A live user that a `users:admin` caller may act on (not themself: nobody suspends themself)."""
    ctx = info.context
    caller = await require_permission(ctx, "users:admin")
    user = await service.get_user_or_raise(ctx.session, user_id=parse_id(id))
    if user.id == caller:
        raise BadUserInput("you cannot suspend or restore yourself", field="id")
    await _require_outranks(info, user.id)
    return user


async def _require_outranks(info: Info, user_id: uuid.UUID) -> None:
    """Nobody acts on someone holding more than they do (deleting them, ending their sessions,
    taking their roles): the target's permissions must all be the caller's. Yourself excepted."""
    ctx = info.context
    if user_id == await authentication.require_user_id(ctx):
        return
    await require_can_grant(ctx, await roles.permissions_of(ctx.session, user_id=user_id))


@strawberry.type
class AccountsQuery:
    @strawberry.field(description="The signed-in user; null, not an error, for anonymous callers and API keys.")
    async def me(self, info: Info) -> User | None:
        user_id = await authentication.user_id(info.context)
        if user_id is None:
            return None
        user = await service.get_active_user(info.context.session, user_id=user_id)
        return User.from_model(user) if user else None

    @strawberry.field
    async def user(self, info: Info, id: strawberry.ID) -> User | None:
        try:
            return User.from_model(await _visible_user(info, parse_id(id)))
        except NotFound:
            return None  # like every single-object lookup: an unknown id is null

    @strawberry.field(
        description="The user with this Discord id, or null (`users:admin`, or `users:lookup` for bots: a "
        "read-only lookup; private fields stay null for it)."
    )
    async def user_by_discord_id(
        self, info: Info, discord_id: Annotated[str, strawberry.argument(metadata=max_length(MAX_EXTERNAL_ID))]
    ) -> User | None:
        ctx = info.context
        await authentication.require_user_id(ctx)
        if not await has_permission(ctx, LOOKUP) and not await has_permission(ctx, "users:admin"):
            raise Forbidden(f"this needs the `{LOOKUP}` or `users:admin` permission", permission=LOOKUP)
        row = await service.find_by_discord_id(ctx.session, discord_id=discord_id)
        return User.from_model(row) if row is not None else None

    @strawberry.field(
        description="Live sessions (opaque bearer tokens), newest first: the caller's own, or another "
        "user's with users:admin."
    )
    async def sessions(
        self, info: Info, user_id: strawberry.ID | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[Session]:
        ctx = info.context
        caller = await authentication.require_user_id(ctx)
        owner = parse_id(user_id, "userId") if user_id is not None else caller
        if owner != caller:
            if not await has_permission(ctx, "users:admin"):
                raise Forbidden("only users:admin may list another user's sessions")
            await _visible_user(info, owner)  # NOT_FOUND for an unknown user
        return await paginate(
            info,
            first=first,
            after=after,
            kind=SESSION_CURSOR,
            to_node=Session.from_model,
            fetch=lambda position, limit, count: credentials.list_sessions(
                ctx.session, user_id=owner, after=position, limit=limit, count=count
            ),
        )

    @strawberry.field(description="Live users, searched in email and names (users:admin).")
    async def users(
        self, info: Info, search: str | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[User]:
        await require_permission(info.context, "users:admin")
        return await paginate(
            info,
            first=first,
            after=after,
            kind=USER_CURSOR,
            to_node=User.from_model,
            # list_users always counts (a search's total is what an admin reads first).
            fetch=lambda position, limit, count: service.list_users(
                info.context.session, search=search, after=position, limit=limit
            ),
        )

    @strawberry.field
    async def roles(self, info: Info) -> list[Role]:
        await require_permission(info.context, "users:admin")
        return [Role.from_model(row) for row in await roles.list_roles(info.context.session)]


@strawberry.type
class AccountsMutation:
    @strawberry.mutation(extensions=[audited()])
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        await limit_sign_in(info.context, email=input.email)
        session = info.context.session
        user = await service.create_user(session, email=input.email, password=input.password, name=input.name)
        return await _auth_payload(info, user)

    @strawberry.mutation(extensions=[audited()])
    async def login(self, info: Info, email: str, password: str) -> AuthPayload:
        await limit_sign_in(info.context, email=email)
        user = await service.authenticate(info.context.session, email=email, password=password)
        return await _auth_payload(info, user)

    @strawberry.mutation(
        extensions=[audited()],
        description="Sign in with an external identity provider's token (OIDC, e.g. a Clerk session token; "
        "LODGE_OIDC_ISSUER): its `sub` is the user's clerkId; a new subject links the live user with the "
        "token's verified email, or becomes a new user. UNAUTHENTICATED for a token that does not verify.",
    )
    async def sign_in_with_provider(
        self, info: Info, token: Annotated[str, strawberry.argument(metadata=max_length(MAX_ID_TOKEN))]
    ) -> AuthPayload:
        ctx = info.context
        provider = ctx.deps.identity_provider
        if provider is None:
            raise BadUserInput("this server takes no identity provider's tokens (LODGE_OIDC_ISSUER is not set)")
        identity = await provider.verify(token)
        user = await oidc.sign_in(ctx.session, identity)
        return await _auth_payload(info, user)

    @strawberry.mutation(
        extensions=[audited()],
        description="Send the caller a token that proves they read their email (LODGE_EMAIL_SENDER; valid 24 h). "
        "CONFLICT if it is verified already.",
    )
    async def request_email_verification(self, info: Info) -> bool:
        ctx = info.context
        user = await service.get_user_or_raise(
            ctx.session, user_id=await authentication.require_user_id(ctx, ctx.session)
        )
        _, message = await email.start_verification(ctx.session, user=user)
        # Sent before the operation commits: should the commit fail, the token that arrived is
        # refused as unknown (nothing else is lost), and the caller sees the error and asks again.
        await (ctx.deps.email_sender or email.ConsoleSender()).send(message)
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Spend a token from requestEmailVerification: the email it was sent to is verified "
        "(BAD_USER_INPUT if it is spent, expired, or no longer the account's email).",
    )
    async def verify_email(
        self, info: Info, token: Annotated[str, strawberry.argument(metadata=max_length(200))]
    ) -> User:
        ctx = info.context
        user_id = await email.verify(ctx.session, token=token)
        user = await service.get_user_or_raise(ctx.session, user_id=user_id)
        await ctx.session.refresh(user)
        return User.from_model(user, own=True)

    @strawberry.mutation(
        extensions=[audited()],
        description="Rotates: the token given is spent; reusing a spent one revokes its login.",
    )
    async def refresh(self, info: Info, refresh_token: str) -> AuthPayload:
        ctx = info.context
        deps = ctx.deps
        user_id, login_id, rotated = await credentials.rotate_refresh_token(
            ctx.session,
            token=refresh_token,
            ttl_seconds=deps.settings.refresh_token_ttl_seconds,
            on_failure=ctx.scope.on_failure.append,
            # Once the revocation is recorded: the login's access tokens stop working everywhere.
            on_reuse=lambda family: authentication.announce(ctx, login_channel(family), end("reused"), on_failure=True),
        )
        user = await service.get_user_or_raise(ctx.session, user_id=user_id)
        token = issue_access_token(
            user.id, login_id=login_id, secret=deps.secret_key, ttl_seconds=deps.settings.access_token_ttl_seconds
        )
        return AuthPayload(
            access_token=token.token,
            refresh_token=rotated,
            expires_at=token.expires_at,
            user=User.from_model(user, own=True),
        )

    @strawberry.mutation(
        extensions=[audited()],
        description="Revokes the refresh token and every token of its login.",
    )
    async def logout(self, info: Info, refresh_token: str) -> bool:
        ctx = info.context
        user_id = await credentials.revoke_refresh_family(ctx.session, token=refresh_token)
        if user_id is None:
            return False
        # The login's access tokens stop working at once (they name their login); its websockets,
        # on any instance, re-check and close.
        authentication.announce(ctx, user_channel(user_id), check("logout"))
        return True

    @strawberry.mutation(extensions=[audited()])
    async def update_me(self, info: Info, input: UpdateMeInput) -> User:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx)
        user = await service.get_user_or_raise(ctx.session, user_id=user_id)
        changes = {k: v for k, v in vars(input).items() if v is not strawberry.UNSET and k != "current_password"}
        new_password = "password" in changes
        before = snapshot(user, changes)
        updated = await service.update_user(
            ctx.session, user=user, changes=dict(changes), current_password=input.current_password
        )
        note_changes(info, before, snapshot(updated, changes))
        if new_password:
            viewer = await authentication.viewer(ctx)
            await credentials.end_other_logins(
                ctx.session,
                user_id=user.id,
                keep_session=viewer.session_id if viewer else None,
                keep_login=viewer.login_id if viewer else None,
            )
            authentication.announce(ctx, user_channel(user.id), check("password"))
        return User.from_model(updated)

    @strawberry.mutation(
        extensions=[audited()],
        description="Soft delete: the user disappears, their sessions and tokens die with them, their projects' "
        "API keys are revoked, their vendors leave public lists, their active subscriptions are cancelled and "
        "their workflows are soft-deleted (public ones are no longer read or run).",
    )
    async def delete_user(self, info: Info, id: strawberry.ID) -> bool:
        ctx = info.context
        user = await _visible_user(info, parse_id(id))
        await _require_outranks(info, user.id)
        ended = await credentials.end_all_credentials(ctx.session, user_id=user.id)
        await service.soft_delete_user(ctx.session, user=user)
        retired = await deletion.retire_owned(ctx.session, user_id=user.id)
        authentication.announce(ctx, user_channel(user.id), end("user"))
        for session_id in ended:
            authentication.announce(ctx, session_channel(session_id), end("session"))
        for key_id in retired.api_key_ids:  # the keys of their projects stop at once, everywhere
            authentication.announce(ctx, api_key_channel(key_id), end("owner deleted"))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Suspend a user (users:admin, over someone holding no more than the caller): they cannot sign "
        "in, their sessions and refresh tokens end, their access tokens and sockets stop at once. Their data stays.",
    )
    async def deactivate_user(self, info: Info, id: strawberry.ID) -> User:
        ctx = info.context
        user = await _administered_user(info, id)
        ended = await credentials.end_all_credentials(ctx.session, user_id=user.id)
        user = await service.set_active(ctx.session, user=user, active=False)
        authentication.announce(ctx, user_channel(user.id), end("user"))
        for session_id in ended:
            authentication.announce(ctx, session_channel(session_id), end("session"))
        return User.from_model(user)

    @strawberry.mutation(
        extensions=[audited()],
        description="Lift a suspension (users:admin): the user signs in again.",
    )
    async def reactivate_user(self, info: Info, id: strawberry.ID) -> User:
        user = await _administered_user(info, id)
        return User.from_model(await service.set_active(info.context.session, user=user, active=True))

    @strawberry.mutation(
        extensions=[audited()],
        description="Find or create by Discord id (users:admin).",
    )
    async def upsert_discord_user(self, info: Info, input: DiscordUserInput) -> User:
        await require_permission(info.context, "users:admin")
        user = await service.upsert_discord_user(
            info.context.session,
            discord_id=input.discord_id,
            username=input.username,
            global_name=input.global_name,
            avatar_url=input.avatar_url,
        )
        return User.from_model(user)

    @strawberry.mutation(
        extensions=[audited()],
        description="Find or create by Clerk id (users:admin).",
    )
    async def upsert_clerk_user(self, info: Info, input: ClerkUserInput) -> User:
        await require_permission(info.context, "users:admin")
        user = await service.upsert_clerk_user(
            info.context.session,
            clerk_id=input.clerk_id,
            email=input.email,
            first_name=input.first_name,
            last_name=input.last_name,
        )
        return User.from_model(user)

    @strawberry.mutation(
        extensions=[audited()],
        description="An opaque bearer token for a user, for trusted backends (users:admin).",
    )
    async def create_session(
        self, info: Info, user_id: strawberry.ID, ttl_seconds: int | None = None
    ) -> SessionPayload:
        ctx = info.context
        user = await service.get_user_or_raise(ctx.session, user_id=parse_id(user_id, "userId"))
        # Acting as someone is holding their permissions: no more than the caller's own.
        await require_can_grant(ctx, await roles.permissions_of(ctx.session, user_id=user.id))
        ttl = ttl_seconds if ttl_seconds is not None else ctx.deps.settings.session_ttl_seconds
        row, token = await credentials.create_session(ctx.session, user_id=user.id, ttl_seconds=ttl)
        return SessionPayload(token=token, session=Session.from_model(row))

    @strawberry.mutation(extensions=[audited()])
    async def delete_session(self, info: Info, id: strawberry.ID) -> bool:
        ctx = info.context
        session_id = parse_id(id)
        row = await ctx.session.get(models.Session, session_id)
        viewer = await authentication.require_user_id(ctx)
        # Someone else's session looks exactly like a missing one to those who may not touch it.
        if row is None or (row.user_id != viewer and not await has_permission(ctx, "users:admin")):
            raise NotFound("session not found", id=str(session_id))
        await _require_outranks(info, row.user_id)
        await credentials.delete_session(ctx.session, session_id=row.id)
        authentication.announce(ctx, session_channel(row.id), end("session"))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Sign out everywhere else: ends every session of the caller but the one this request "
        "uses (all of them when signed in otherwise); their sockets close. The number ended.",
    )
    async def delete_other_sessions(self, info: Info) -> int:
        ctx = info.context
        await authentication.require_user_id(ctx)  # UNAUTHENTICATED for anonymous callers and API keys
        viewer = await authentication.viewer(ctx)
        assert viewer is not None
        ended = await credentials.delete_other_sessions(ctx.session, user_id=viewer.user_id, keep=viewer.session_id)
        for session_id in ended:
            authentication.announce(ctx, session_channel(session_id), end("session"))
        return len(ended)

    @strawberry.mutation(extensions=[audited()])
    async def delete_expired_sessions(self, info: Info) -> int:
        await require_permission(info.context, "users:admin")
        return await credentials.delete_expired_sessions(info.context.session)

    @strawberry.mutation(extensions=[audited()])
    async def create_role(self, info: Info, input: RoleInput) -> Role:
        await require_can_grant(info.context, set(input.permissions))
        row = await roles.create_role(
            info.context.session, name=input.name, description=input.description, permissions=input.permissions
        )
        return Role.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def assign_role(self, info: Info, user_id: strawberry.ID, role_id: strawberry.ID) -> User:
        ctx = info.context
        role = await roles.get_role_or_raise(ctx.session, role_id=parse_id(role_id, "roleId"))
        admin = await require_can_grant(ctx, set(role.permissions))
        user = await service.get_user_or_raise(ctx.session, user_id=parse_id(user_id, "userId"))
        await roles.assign_role(ctx.session, user_id=user.id, role_id=role.id, assigned_by=admin)
        return User.from_model(user)

    @strawberry.mutation(
        extensions=[audited()],
        description="Change a role (the caller must hold every permission it has and would have); its holders' "
        "live subscriptions end, as their rights changed.",
    )
    async def update_role(self, info: Info, id: strawberry.ID, input: RoleUpdate) -> Role:
        ctx = info.context
        role = await roles.get_role_or_raise(ctx.session, role_id=parse_id(id))
        await require_can_grant(ctx, set(role.permissions) | set(input.permissions or ()))
        before = set(role.permissions)
        fields = ("name", "description", "permissions")
        was = snapshot(role, fields)
        role = await roles.update_role(
            ctx.session, role=role, name=input.name, description=input.description, permissions=input.permissions
        )
        note_changes(info, was, snapshot(role, fields))
        if set(role.permissions) != before:
            for user_id in await roles.holders_of(ctx.session, role_id=role.id):
                authentication.announce(ctx, user_channel(user_id), end("permissions"))
        return Role.from_model(role)

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete a role and its assignments (the caller must hold every permission it has); its "
        "holders' live subscriptions end.",
    )
    async def delete_role(self, info: Info, id: strawberry.ID) -> bool:
        ctx = info.context
        role = await roles.get_role_or_raise(ctx.session, role_id=parse_id(id))
        await require_can_grant(ctx, set(role.permissions))
        holders = await roles.holders_of(ctx.session, role_id=role.id)
        await roles.delete_role(ctx.session, role_id=role.id)
        for user_id in holders:
            authentication.announce(ctx, user_channel(user_id), end("permissions"))
        return True

    @strawberry.mutation(extensions=[audited()])
    async def revoke_role(self, info: Info, user_id: strawberry.ID, role_id: strawberry.ID) -> User:
        ctx = info.context
        role = await roles.get_role_or_raise(ctx.session, role_id=parse_id(role_id, "roleId"))
        await require_can_grant(ctx, set(role.permissions))
        user = await service.get_user_or_raise(ctx.session, user_id=parse_id(user_id, "userId"))
        await _require_outranks(info, user.id)
        await roles.revoke_role(ctx.session, user_id=user.id, role_id=role.id)
        # What the user's open subscriptions were allowed to see was decided with the old rights.
        authentication.announce(ctx, user_channel(user.id), end("permissions"))
        return User.from_model(user)
