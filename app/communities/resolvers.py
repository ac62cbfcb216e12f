"""Queries, mutations and the live chat subscription of the communities domain."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry

from app.accounts import authentication
from app.accounts.permissions import has_permission, permits
from app.accounts.service import require_user_exists
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import BadUserInput, Forbidden, NotFound
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    paginate,
)
from app.api.scalars import JSON
from app.api.validation import MAX_KEY, MAX_NAME, MAX_SEARCH, given, like_pattern, parse_id
from app.audit.recorder import audited
from app.communities import access, events, models
from app.communities.reads import GUILD_CURSOR, _decode_guild_cursor, guilds_page
from app.communities.service import analyses, chat, guilds
from app.communities.types import (
    CONVERSATION_OWNER,
    GUILD_READER,
    IN_READABLE_GUILD,
    ChatConversation,
    ChatMessage,
    ChatMessageInput,
    ClubAnalysis,
    ClubAnalysisInput,
    ClubAnalysisOrder,
    ClubAnalysisUpdate,
    Guild,
    GuildInput,
    GuildMember,
    analysis_cursor,
    decode_analysis_cursor,
)
from app.pubsub import RESYNC

CONVERSATION_CURSOR = "conversation"


async def _conversation(info: Info, conversation_id: uuid.UUID) -> models.ChatConversation:
    """A conversation is its owner's alone."""
    ctx = info.context
    await authentication.require_user_id(ctx, ctx.session)
    conversation = await chat.get_conversation_or_raise(ctx.session, conversation_id=conversation_id)
    if not await permits(ctx, CONVERSATION_OWNER, conversation.user_id):
        raise Forbidden("this conversation belongs to someone else")
    return conversation


# Compiled reads (docs/compiled-reads.md; tests/api/test_compiled_communities.py).
c.root("Query.clubAnalysis", c.ById("ClubAnalysis", bind=parse_id, row_guard=IN_READABLE_GUILD))  # unknown: null
c.root(
    "Query.conversation",
    c.ById("ChatConversation", bind=parse_id, row_guard=CONVERSATION_OWNER, signed_in=True),  # unknown: null
)
c.root(
    "Query.conversations",
    c.Connection(
        "ChatConversation",
        order=c.Keyset("created_at", "id", CONVERSATION_CURSOR),
        filter=CONVERSATION_OWNER,
        signed_in=True,
        # Only a member names a guild here; anyone else (a guild that does not exist included) gets
        # the resolver's error (_check_chat_access; a `guilds:write` holder is let in there too).
        filters={
            "guildId": c.Filter(
                lambda t, guild: f"{t}.guild_id = {guild}::uuid",
                bind=lambda guild: parse_id(guild, "guildId"),
                access=lambda guild, viewer: (
                    f"EXISTS (SELECT 1 FROM user_guilds m"
                    f" WHERE m.guild_id = {guild}::uuid AND m.user_id = {viewer.user})"
                ),
            )
        },
    ),
)

# By id or Discord id (exactly one); readers only (access.require_reader), unknown: null.
c.root(
    "Query.guild",
    c.Lookup(
        "Guild",
        keys={"id": "id", "discordId": "discord_id"},
        one_of=True,
        bind={"id": parse_id},
        row_guard=GUILD_READER,
    ),
)
# By name: all of them for guilds:write, else the caller's (GUILD_READER as a filter).
c.root(
    "Query.guilds",
    c.Connection(
        "Guild",
        order=c.NameKeyset("name", "id", GUILD_CURSOR, _decode_guild_cursor),
        filters={"search": c.Filter(lambda t, like: f"{t}.name ILIKE {like}::text", bind=like_pattern, truthy=True)},
        filter=GUILD_READER,
        signed_in=True,
    ),
)
# A posted message: its author and conversation read by one statement (`guild` keeps its resolver,
# and with it the whole rendering).
c.root("Subscription.chatMessageAdded", c.Event("ChatMessage"))


# Not declared, for want of a planner feature: clubAnalyses (its cursor is json.dumps(...) in Python).
@strawberry.type
class CommunitiesQuery:
    @strawberry.field(description="One guild, by `id` or by `discordId`.")
    async def guild(
        self,
        info: Info,
        id: strawberry.ID | None = None,
        discord_id: Annotated[str | None, strawberry.argument(metadata=max_length(guilds.MAX_DISCORD_ID))] = None,
    ) -> Guild | None:
        if (id is None) == (discord_id is None):
            raise BadUserInput("pass exactly one of `id` and `discordId`")
        session = info.context.session
        if id is not None:
            row = await session.get(models.Guild, parse_id(id))
        else:
            row = await guilds.get_guild_by_discord_id(session, discord_id=discord_id or "")
        if row is None:
            return None
        await access.require_reader(info, row.id)
        return Guild.from_model(row)

    @strawberry.field(description="Guilds by name: all of them for `guilds:write`, else the caller's.")
    async def guilds(
        self,
        info: Info,
        search: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_SEARCH))] = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Guild]:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        member_id = None if await access.is_staff(info) else user_id
        return await guilds_page(info, search=search, member_id=member_id, first=first, after=after)

    @strawberry.field(
        description="Club analyses of the guilds the caller can see, filtered; `search` matches title or "
        "summary, case-insensitively."
    )
    async def club_analyses(
        self,
        info: Info,
        guild_id: strawberry.ID | None = None,
        user_id: strawberry.ID | None = None,
        min_confidence: float | None = None,
        search: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_SEARCH))] = None,
        order_by: ClubAnalysisOrder = ClubAnalysisOrder.NEWEST,  # type: ignore[valid-type]
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ClubAnalysis]:
        ctx = info.context
        viewer = await authentication.require_user_id(ctx, ctx.session)
        order = analyses.AnalysisOrder(order_by.value)  # type: ignore[attr-defined]
        guild_ids: list[uuid.UUID] | None = None
        member_id: uuid.UUID | None = None
        if guild_id is not None:
            gid = parse_id(guild_id, "guildId")
            await guilds.get_guild_or_raise(ctx.session, guild_id=gid)
            await access.require_reader(info, gid)
            guild_ids = [gid]
        elif not await access.is_staff(info):
            member_id = viewer
        spec = analyses.AnalysisFilter(
            guild_ids=guild_ids,
            member_id=member_id,
            user_id=await require_user_exists(ctx.session, parse_id(user_id, "userId"), "userId") if user_id else None,
            min_confidence=min_confidence,
            search=search or None,
        )
        return await paginate(
            info,
            first=first,
            after=after,
            kind="analysis",
            position=lambda kind, cursor: decode_analysis_cursor(order, cursor),
            fetch=lambda position, limit, count: analyses.list_analyses(
                ctx.session, spec=spec, order=order, after=position, limit=limit, count=count
            ),
            to_node=ClubAnalysis.from_model,
            cursor_of=lambda row: analysis_cursor(order, row),
        )

    @strawberry.field
    async def club_analysis(self, info: Info, id: strawberry.ID) -> ClubAnalysis | None:
        row = await info.context.session.get(models.ClubAnalysis, parse_id(id))
        if row is None:
            return None
        await access.require_reader(info, row.guild_id)
        return ClubAnalysis.from_model(row)

    @strawberry.field(description="One of the caller's conversations.")
    async def conversation(self, info: Info, id: strawberry.ID) -> ChatConversation | None:
        try:
            return ChatConversation.from_model(await _conversation(info, parse_id(id)))
        except NotFound:
            return None

    @strawberry.field(
        description="The caller's conversations, newest first; with `guildId`, those about that guild (one the "
        "caller belongs to)."
    )
    async def conversations(
        self, info: Info, guild_id: strawberry.ID | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[ChatConversation]:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        gid = None
        if guild_id is not None:
            gid = parse_id(guild_id, "guildId")
            await _check_chat_access(info, ctx.session, None, gid)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=CONVERSATION_CURSOR,
            to_node=ChatConversation.from_model,
            fetch=lambda position, limit, count: chat.list_conversations(
                ctx.session, user_id=user_id, guild_id=gid, before=position, limit=limit, count=count
            ),
        )


@strawberry.type
class CommunitiesMutation:
    @strawberry.mutation(
        extensions=[audited()],
        description="Find or create a guild by Discord id (`guilds:write`).",
    )
    async def upsert_guild(self, info: Info, input: GuildInput) -> Guild:
        if not await access.is_staff(info):
            raise Forbidden(f"this needs the `{access.WRITE}` permission", permission=access.WRITE)
        row = await guilds.upsert_guild(
            info.context.session,
            discord_id=input.discord_id,
            name=input.name,
            settings=input.settings,  # type: ignore[arg-type]  # checked to be an object
        )
        return Guild.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Merge `settings` into the guild's (RFC 7396: null removes a key), atomically.",
    )
    async def update_guild_settings(self, info: Info, id: strawberry.ID, settings: JSON) -> Guild:
        guild_id = parse_id(id)
        await guilds.get_guild_or_raise(info.context.session, guild_id=guild_id)
        await access.require_admin(info, guild_id)
        return Guild.from_model(
            await guilds.update_guild_settings(info.context.session, guild_id=guild_id, patch=settings)
        )

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete a guild with its memberships, analyses and messages.",
    )
    async def delete_guild(self, info: Info, id: strawberry.ID) -> bool:
        guild_id = parse_id(id)
        await guilds.get_guild_or_raise(info.context.session, guild_id=guild_id)
        await access.require_admin(info, guild_id, owner=True)
        await guilds.delete_guild(info.context.session, guild_id=guild_id)
        info.context.publish_after_commit(*events.guild_deleted(guild_id))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Add a member, or replace a member's roles when `roles` is given. Guild admins "
        "manage members; only owners grant or take `owner` and `admin`.",
    )
    async def add_guild_member(
        self,
        info: Info,
        guild_id: strawberry.ID,
        user_id: strawberry.ID,
        roles: Annotated[list[str] | None, strawberry.argument(metadata=max_length(MAX_KEY))] = None,
    ) -> GuildMember:
        ctx = info.context
        gid, uid = parse_id(guild_id, "guildId"), parse_id(user_id, "userId")
        await guilds.get_guild_or_raise(ctx.session, guild_id=gid, share=True)
        await access.require_admin(info, gid)
        if roles is not None:
            current = await guilds.get_membership(ctx.session, guild_id=gid, user_id=uid, lock=True)
            before, after = (current.roles if current else []), guilds.normalize_roles(roles)
            if guilds.touches_admin_roles(before, after):
                await access.require_admin(info, gid, owner=True)
            if guilds.OWNER in before and guilds.OWNER not in after:
                await guilds.require_another_owner(ctx.session, guild_id=gid, user_id=uid)
        row = await guilds.add_member(ctx.session, guild_id=gid, user_id=uid, roles=roles)
        return GuildMember.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Remove a member (anyone may leave). False if they were not a member.",
    )
    async def remove_guild_member(self, info: Info, guild_id: strawberry.ID, user_id: strawberry.ID) -> bool:
        ctx = info.context
        gid, uid = parse_id(guild_id, "guildId"), parse_id(user_id, "userId")
        viewer = await authentication.require_user_id(ctx, ctx.session)
        await guilds.get_guild_or_raise(ctx.session, guild_id=gid)
        current = await guilds.get_membership(ctx.session, guild_id=gid, user_id=uid, lock=True)
        if uid != viewer:
            await access.require_admin(info, gid)
            if current is not None and guilds.is_admin(current):
                await access.require_admin(info, gid, owner=True)
        if current is not None and guilds.OWNER in current.roles:
            await guilds.require_another_owner(ctx.session, guild_id=gid, user_id=uid)
        removed = await guilds.remove_member(ctx.session, guild_id=gid, user_id=uid)
        if removed:
            ctx.publish_after_commit(*events.member_left(gid, uid))
        return removed

    @strawberry.mutation(
        extensions=[audited()],
        description="An analysis with its images and metrics, all or nothing (members).",
    )
    async def create_club_analysis(self, info: Info, input: ClubAnalysisInput) -> ClubAnalysis:
        ctx = info.context
        gid = parse_id(input.guild_id, "guildId")
        credited = await access.credited_user(info, input.on_behalf_of_discord_id)
        await guilds.get_guild_or_raise(ctx.session, guild_id=gid, share=True)
        user_id = await access.require_credited_member(info, gid, credited)
        row = await analyses.create_analysis(
            ctx.session,
            guild_id=gid,
            user_id=user_id,
            title=input.title,
            summary=input.summary,
            confidence_=input.confidence,
            images=[analyses.ImageSpec(i.image_url, i.original_name, i.file_size) for i in input.images or []],
            metrics=[analyses.MetricSpec(m.name, m.value, m.unit, m.category) for m in input.metrics or []],
        )
        return ClubAnalysis.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Change an analysis (its creator only).",
    )
    async def update_club_analysis(self, info: Info, id: strawberry.ID, input: ClubAnalysisUpdate) -> ClubAnalysis:
        ctx = info.context
        viewer = await authentication.require_user_id(ctx, ctx.session)
        row = await analyses.get_analysis_or_raise(ctx.session, analysis_id=parse_id(id))
        if row.user_id != viewer:
            await access.require_reader(info, row.guild_id)  # strangers learn nothing more than members
            raise Forbidden("only the creator of an analysis can change it")
        changes = given(input)
        return ClubAnalysis.from_model(await analyses.update_analysis(ctx.session, analysis=row, changes=changes))

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete an analysis (its creator, the guild's admins, or `guilds:write`).",
    )
    async def delete_club_analysis(self, info: Info, id: strawberry.ID) -> bool:
        ctx = info.context
        viewer = await authentication.require_user_id(ctx, ctx.session)
        row = await analyses.get_analysis_or_raise(ctx.session, analysis_id=parse_id(id))
        if row.user_id != viewer:
            await access.require_admin(info, row.guild_id)
        await analyses.delete_analysis(ctx.session, analysis=row)
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="A conversation of the caller's; `guildId` makes it about a guild they belong to (listed by "
        "`conversations(guildId:)`).",
    )
    async def create_conversation(
        self,
        info: Info,
        title: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_NAME))] = None,
        guild_id: strawberry.ID | None = None,
    ) -> ChatConversation:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        gid = None
        if guild_id is not None:
            gid = parse_id(guild_id, "guildId")
            await _check_chat_access(info, ctx.session, None, gid)
        row = await chat.create_conversation(ctx.session, user_id=user_id, title=title, guild_id=gid)
        return ChatConversation.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Retitle one of the caller's conversations (null clears the title).",
    )
    async def rename_conversation(
        self,
        info: Info,
        id: strawberry.ID,
        title: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_NAME))] = None,
    ) -> ChatConversation:
        row = await _own_conversation(info, id)
        return ChatConversation.from_model(
            await chat.rename_conversation(info.context.session, conversation=row, title=title)
        )

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete one of the caller's conversations with its messages (those also posted in a guild "
        "included); its live streams end with NOT_FOUND.",
    )
    async def delete_conversation(self, info: Info, id: strawberry.ID) -> bool:
        row = await _own_conversation(info, id)
        await chat.delete_conversation(info.context.session, conversation=row)
        info.context.publish_after_commit(*events.conversation_deleted(row.id))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Post in one of the caller's conversations and/or in a guild they belong to; "
        "subscribers get it after the commit.",
    )
    async def post_chat_message(self, info: Info, input: ChatMessageInput) -> ChatMessage:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        if input.conversation_id is None and input.guild_id is None:
            raise BadUserInput("pass `conversationId`, `guildId`, or both")
        credited = await access.credited_user(info, input.on_behalf_of_discord_id)
        conversation_id = guild_id = None
        if input.conversation_id is not None:
            cid = parse_id(input.conversation_id, "conversationId")
            if credited is None:
                conversation_id = (await _conversation(info, cid)).id
            else:  # a bot posts in the conversation of the user it acts for, only
                conversation = await chat.get_conversation_or_raise(ctx.session, conversation_id=cid)
                if conversation.user_id != credited:
                    raise Forbidden("this conversation belongs to someone else than the user acted for")
                conversation_id = conversation.id
        if input.guild_id is not None:
            guild_id = parse_id(input.guild_id, "guildId")
            await guilds.get_guild_or_raise(ctx.session, guild_id=guild_id, share=True)
            await access.require_credited_member(info, guild_id, credited)
        user_id = credited or user_id
        message = await chat.post_message(
            ctx.session, user_id=user_id, conversation_id=conversation_id, guild_id=guild_id, text=input.text
        )
        for channel, payload in events.message_published(message):
            ctx.publish_after_commit(channel, payload)
        return ChatMessage.from_model(message)


@strawberry.type
class CommunitiesSubscription:
    @strawberry.subscription(
        description="Messages posted after the subscription starts, in a conversation (its owner) or a "
        "guild (its members); with both, the conversation's messages posted in that guild."
    )
    async def chat_message_added(
        self, info: Info, conversation_id: strawberry.ID | None = None, guild_id: strawberry.ID | None = None
    ) -> AsyncGenerator[ChatMessage, None]:
        ctx = info.context
        if conversation_id is None and guild_id is None:
            raise BadUserInput("pass `conversationId`, `guildId`, or both")
        cid = parse_id(conversation_id, "conversationId") if conversation_id else None
        gid = parse_id(guild_id, "guildId") if guild_id else None
        channel = events.conversation_channel(cid) if cid else events.guild_channel(gid)  # type: ignore[arg-type]
        recheck = ctx.deps.settings.tail_poll_seconds
        # Subscribed before access is checked: a removal committed in between is still heard.
        async with ctx.deps.hub.subscribe(channel) as live:
            async with ctx.deps.db.session() as session:
                viewer = await _check_chat_access(info, session, cid, gid)
            while True:
                try:
                    async with asyncio.timeout(recheck):
                        message = await live.get()
                except TimeoutError:
                    message = RESYNC
                if message is RESYNC:
                    # A lost "left" event (broker outage, overflow) must not keep a removed member
                    # listening: access is checked again now and then, and after every gap.
                    async with ctx.deps.db.session() as session:
                        await _check_chat_access(info, session, cid, gid)
                    continue
                kind = message.get("kind")
                if kind == events.DELETED:
                    raise NotFound(f"the {message.get('what', 'guild')} was deleted")
                if kind == events.LEFT:
                    if message.get("user_id") == str(viewer):
                        raise Forbidden("you are no longer a member of this guild")
                    continue
                if kind != events.MESSAGE:
                    continue
                row = chat.message_from_event(message["message"])
                if gid is not None and row.guild_id != gid:
                    continue
                async with ctx.event_scope():
                    yield ChatMessage.from_model(row)


async def _own_conversation(info: Info, id: strawberry.ID) -> Any:
    """The caller's conversation: NOT_FOUND if there is none, FORBIDDEN if it is someone else's (as
    `chatMessageAdded` answers)."""
    ctx = info.context
    caller = await authentication.require_user_id(ctx, ctx.session)
    row = await chat.get_conversation_or_raise(ctx.session, conversation_id=parse_id(id))
    if row.user_id != caller:
        raise Forbidden("this conversation belongs to someone else")
    return row


async def _check_chat_access(info: Info, session: Any, cid: uuid.UUID | None, gid: uuid.UUID | None) -> uuid.UUID:
    """Checked on a short session of its own: a subscription must not hold a connection while it waits."""

    ctx = info.context
    viewer = await authentication.require_user_id(ctx, session)
    if cid is not None:
        conversation = await chat.get_conversation_or_raise(session, conversation_id=cid)
        if conversation.user_id != viewer:
            raise Forbidden("this conversation belongs to someone else")
    if gid is not None:
        await guilds.get_guild_or_raise(session, guild_id=gid)
        member = await guilds.get_membership(session, guild_id=gid, user_id=viewer)
        if member is None and not await has_permission(ctx, access.WRITE, session):
            raise Forbidden("only members of this guild can follow its chat", guildId=str(gid))
    return viewer
