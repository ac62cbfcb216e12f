"""GraphQL types of the communities domain."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from app.accounts import authentication
from app.accounts.permissions import permits
from app.accounts.types import load_user
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.cost import max_items
from app.api.errors import BadUserInput, Forbidden
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    decode_cursor,
    encode_cursor,
    page_size,
    paginate_both_ways,
    paginate_nested,
    time_cursor,
)
from app.api.scalars import JSON, utc
from app.api.validation import MAX_NAME, MAX_TEXT
from app.communities import access, loaders, models
from app.communities.service import analyses as analyses_service
from app.communities.service import chat as chat_service
from app.communities.service.guilds import MAX_DISCORD_ID

if TYPE_CHECKING:
    from app.accounts.types import User

UserType = Annotated["User", strawberry.lazy("app.accounts.types")]

MEMBER_CURSOR = "member"
MESSAGE_CURSOR = "message"
ANALYSIS_CURSOR = "analysis"

# A conversation is its owner's alone (ChatMessage.conversation is null for anyone else).
CONVERSATION_OWNER = c.Rule(owner="user_id")


def _member_of(column: str) -> Callable[[str, c.Viewer], str]:
    """SQL: the caller is a member of the guild whose id is the row's `column` (access.membership)."""
    return lambda row, viewer: (
        f"EXISTS (SELECT 1 FROM user_guilds lodge_m WHERE lodge_m.guild_id = {row}.{column} "
        f"AND lodge_m.user_id = {viewer.user})"
    )


# `access.can_read` as SQL (its Python twin stays in access.py): a member of the guild, or
# `guilds:write`. GUILD_READER is over a guild's row, IN_READABLE_GUILD over a row of a guild.
GUILD_READER = c.Rule(permissions=(access.WRITE,), custom=_member_of("id"))
IN_READABLE_GUILD = c.Rule(permissions=(access.WRITE,), custom=_member_of("guild_id"))


async def load_guild(info: Info, guild_id: uuid.UUID) -> Guild:
    row = await info.context.loaders.by_id(models.Guild).load(guild_id)
    assert row is not None  # followed along a NOT NULL foreign key
    return Guild.from_model(row)


def analysis_cursor(order: analyses_service.AnalysisOrder, row: models.ClubAnalysis) -> str:
    key = [
        v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
        for v in analyses_service.sort_key(row, order)
    ]
    return encode_cursor(ANALYSIS_CURSOR, json.dumps([order.value, *key]))


def decode_analysis_cursor(order: analyses_service.AnalysisOrder, cursor: str | None) -> list[Any] | None:
    raw = decode_cursor(ANALYSIS_CURSOR, cursor)
    if raw is None:
        return None
    try:
        values = json.loads(raw)
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None
    if not isinstance(values, list) or not values or values[0] != order.value:
        raise BadUserInput("this cursor belongs to another ordering", cursor=cursor)
    return analyses_service.cursor_values(order, values[1:])


async def nested_analyses(
    info: Info, *, parent: Any, first: int | None, after: str | None, min_confidence: float | None, of_member: bool
) -> Connection[ClubAnalysis]:
    order = analyses_service.AnalysisOrder.NEWEST
    page_size(first)  # a bad `first` is refused first, as before any other argument
    if min_confidence is not None:
        analyses_service.confidence(min_confidence, "minConfidence")

    def position(kind: str, cursor: str | None) -> tuple[Any, ...] | None:
        found = decode_analysis_cursor(order, cursor)
        return tuple(found) if found else None

    return await paginate_nested(
        info,
        parent=parent,
        first=first,
        after=after,
        kind="analysis",
        pages=loaders.member_analyses if of_member else loaders.guild_analyses,
        counts=loaders.member_analysis_counts if of_member else loaders.guild_analysis_counts,
        to_node=ClubAnalysis.from_model,
        extra=min_confidence,
        variant=of_member,
        position=position,
        cursor_of=lambda row: analysis_cursor(order, row),
    )


async def messages_connection(
    info: Info,
    *,
    conversation_id: uuid.UUID | None,
    guild_id: uuid.UUID | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> Connection[ChatMessage]:
    return await paginate_both_ways(
        info,
        first=first,
        after=after,
        last=last,
        before=before,
        kind=MESSAGE_CURSOR,
        fetch=lambda after_at, before_at, limit, backwards, count: chat_service.list_messages(
            info.context.session,
            conversation_id=conversation_id,
            guild_id=guild_id,
            after=after_at,
            before=before_at,
            limit=limit,
            backwards=backwards,
            count=count,
        ),
        to_node=ChatMessage.from_model,
    )


# Compiled reads (docs/compiled-reads.md): the columns and relations declared below write, byte
# for byte, what the resolvers write. Guild.clubAnalyses has a Python cursor and chatMessages
# backward pages: they keep their resolvers.
@c.table(
    models.Guild,
    members=c.Connection(
        "GuildMember",
        order=c.Keyset("created_at", "id", MEMBER_CURSOR, descending=False),  # joining order
        child_key="guild_id",
        where=lambda t: f"EXISTS (SELECT 1 FROM users u WHERE u.id = {t}.user_id AND u.deleted_at IS NULL)",
        guard=GUILD_READER,  # access.require_reader: FORBIDDEN (or UNAUTHENTICATED) for others
    ),
)
@strawberry.type(name="Guild")
class Guild:
    id: strawberry.ID
    discord_id: str
    name: str
    settings: JSON
    created_at: datetime
    updated_at: datetime
    guild_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, row: models.Guild) -> Guild:
        return cls(
            id=strawberry.ID(str(row.id)),
            discord_id=row.discord_id,
            name=row.name,
            settings=row.settings,  # type: ignore[arg-type]  # any JSON value
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            guild_id=row.id,
        )

    @strawberry.field(description="Members in joining order.")
    async def members(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[GuildMember]:
        await access.require_reader(info, self.guild_id)
        return await paginate_nested(
            info,
            parent=self.guild_id,
            first=first,
            after=after,
            kind=MEMBER_CURSOR,
            pages=loaders.members,
            counts=loaders.member_counts,
            to_node=GuildMember.from_model,
        )

    @strawberry.field(description="The guild's club analyses, newest first.")
    async def club_analyses(
        self, info: Info, first: int | None = None, after: str | None = None, min_confidence: float | None = None
    ) -> Connection[ClubAnalysis]:
        await access.require_reader(info, self.guild_id)
        return await nested_analyses(
            info, parent=self.guild_id, first=first, after=after, min_confidence=min_confidence, of_member=False
        )

    @strawberry.field(description="Messages posted in the guild, oldest first (`last` for the newest).")
    async def chat_messages(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[ChatMessage]:
        await access.require_reader(info, self.guild_id)
        return await messages_connection(
            info, conversation_id=None, guild_id=self.guild_id, first=first, after=after, last=last, before=before
        )


@c.table(
    models.UserGuild,
    joined_at=c.Col("created_at"),
    user=c.ManyToOne("User", key="user_id"),  # non-null: a missing row bails (load_user asserts)
    guild=c.ManyToOne("Guild", key="guild_id"),  # load_guild checks nothing
)
@strawberry.type(name="GuildMember")
class GuildMember:
    roles: list[str]
    joined_at: datetime
    row: strawberry.Private[models.UserGuild]

    @classmethod
    def from_model(cls, row: models.UserGuild) -> GuildMember:
        return cls(roles=list(row.roles), joined_at=utc(row.created_at), row=row)

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        user = await load_user(info, self.row.user_id)
        assert user is not None
        return user

    @strawberry.field
    async def guild(self, info: Info) -> Guild:
        return await load_guild(info, self.row.guild_id)

    @strawberry.field(description="This member's club analyses in this guild, newest first.")
    async def club_analyses(
        self, info: Info, first: int | None = None, after: str | None = None, min_confidence: float | None = None
    ) -> Connection[ClubAnalysis]:
        await access.require_reader(info, self.row.guild_id)
        return await nested_analyses(
            info,
            parent=(self.row.guild_id, self.row.user_id),
            first=first,
            after=after,
            min_confidence=min_confidence,
            of_member=True,
        )


@c.table(models.ClubAnalysisImage)
@strawberry.type(name="ClubAnalysisImage")
class ClubAnalysisImage:
    id: strawberry.ID
    image_url: str
    original_name: str | None
    file_size: int | None
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.ClubAnalysisImage) -> ClubAnalysisImage:
        return cls(
            id=strawberry.ID(str(row.id)),
            image_url=row.image_url,
            original_name=row.original_name,
            file_size=row.file_size,
            created_at=utc(row.created_at),
        )


@c.table(models.ClubMetric)
@strawberry.type(name="ClubMetric")
class ClubMetric:
    id: strawberry.ID
    name: str
    value: float
    unit: str | None
    category: str | None

    @classmethod
    def from_model(cls, row: models.ClubMetric) -> ClubMetric:
        return cls(id=strawberry.ID(str(row.id)), name=row.name, value=row.value, unit=row.unit, category=row.category)


@c.table(
    models.ClubAnalysis,
    user=c.ManyToOne("User", key="user_id"),
    guild=c.ManyToOne("Guild", key="guild_id", visible=GUILD_READER),  # non-null: hidden bails (FORBIDDEN)
    # Loaders.children's order: the position as sent, then the primary key.
    images=c.Children("ClubAnalysisImage", order=lambda t: f"{t}.position, {t}.id", child_key="analysis_id"),
    metrics=c.Children("ClubMetric", order=lambda t: f"{t}.position, {t}.id", child_key="analysis_id"),
)
@strawberry.type(name="ClubAnalysis")
class ClubAnalysis:
    id: strawberry.ID
    title: str | None
    summary: str
    confidence: float
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[models.ClubAnalysis]

    @classmethod
    def from_model(cls, row: models.ClubAnalysis) -> ClubAnalysis:
        return cls(
            id=strawberry.ID(str(row.id)),
            title=row.title,
            summary=row.summary,
            confidence=row.confidence,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            row=row,
        )

    @strawberry.field
    async def guild(self, info: Info) -> Guild:
        await access.require_reader(info, self.row.guild_id)  # its creator may have left
        return await load_guild(info, self.row.guild_id)

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        user = await load_user(info, self.row.user_id)
        assert user is not None
        return user

    @strawberry.field(metadata=max_items(analyses_service.MAX_IMAGES))
    async def images(self, info: Info) -> list[ClubAnalysisImage]:
        rows = await info.context.loaders.children(models.ClubAnalysisImage, "analysis_id", order="position").load(
            self.row.id
        )
        return [ClubAnalysisImage.from_model(row) for row in rows]

    @strawberry.field(metadata=max_items(analyses_service.MAX_METRICS))
    async def metrics(self, info: Info) -> list[ClubMetric]:
        rows = await info.context.loaders.children(models.ClubMetric, "analysis_id", order="position").load(self.row.id)
        return [ClubMetric.from_model(row) for row in rows]


@c.table(
    models.ChatConversation,
    user=c.ManyToOne("User", key="user_id"),
    # Oldest first, pages either way; its owner's alone (else the resolver's errors).
    messages=c.Connection(
        "ChatMessage",
        order=c.Keyset("created_at", "id", MESSAGE_CURSOR, descending=False),
        child_key="conversation_id",
        guard=CONVERSATION_OWNER,
    ),
)
@strawberry.type(name="ChatConversation")
class ChatConversation:
    id: strawberry.ID
    title: str | None
    created_at: datetime
    updated_at: datetime = strawberry.field(description="When the last message was posted (or the title changed).")
    row: strawberry.Private[models.ChatConversation]

    @classmethod
    def from_model(cls, row: models.ChatConversation) -> ChatConversation:
        return cls(
            id=strawberry.ID(str(row.id)),
            title=row.title,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            row=row,
        )

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        user = await load_user(info, self.row.user_id)
        assert user is not None
        return user

    @strawberry.field(
        description="The guild it is about (createConversation's guildId); null if none, or if the caller may "
        "no longer read it."
    )
    async def guild(self, info: Info) -> Guild | None:
        if self.row.guild_id is None or not await access.can_read(info, self.row.guild_id):
            return None
        row = await info.context.loaders.by_id(models.Guild).load(self.row.guild_id)
        return Guild.from_model(row) if row is not None else None

    @strawberry.field(description="Oldest first; `last` reads the newest.")
    async def messages(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[ChatMessage]:
        await authentication.require_user_id(info.context, info.context.session)
        if not await permits(info.context, CONVERSATION_OWNER, self.row.user_id):
            raise Forbidden("this conversation belongs to someone else")
        return await messages_connection(
            info, conversation_id=self.row.id, guild_id=None, first=first, after=after, last=last, before=before
        )


# `guild` stays with its resolver: `access.can_read` raises UNAUTHENTICATED for anonymous callers
# where GUILD_READER would answer null.
@c.table(
    models.ChatMessage,
    cursor=c.Expr(lambda t: c.Keyset("created_at", "id", MESSAGE_CURSOR).cursor(t)),
    user=c.ManyToOne("User", key="user_id"),  # null when the author is gone
    conversation=c.ManyToOne("ChatConversation", key="conversation_id", visible=CONVERSATION_OWNER),
)
@strawberry.type(name="ChatMessage")
class ChatMessage:
    id: strawberry.ID
    text: str
    created_at: datetime
    row: strawberry.Private[models.ChatMessage]

    @classmethod
    def from_model(cls, row: models.ChatMessage) -> ChatMessage:
        return cls(
            id=strawberry.ID(str(row.id)),
            text=row.text,
            created_at=utc(row.created_at),
            row=row,
        )

    @strawberry.field
    def cursor(self) -> str:
        """Where this message sits in its conversation's or guild's `messages` (for `after`)."""
        return time_cursor(MESSAGE_CURSOR, self.row.created_at, self.row.id)

    @strawberry.field(description="The conversation it was posted in; null for others than its owner.")
    async def conversation(self, info: Info) -> ChatConversation | None:
        if self.row.conversation_id is None:
            return None
        row = await info.context.loaders.by_id(models.ChatConversation).load(self.row.conversation_id)
        if row is None or not await permits(info.context, CONVERSATION_OWNER, row.user_id):
            return None  # a guild member sees a message, not the private conversation it came from
        return ChatConversation.from_model(row)

    @strawberry.field(description="The guild it was posted in; null for those who cannot see the guild.")
    async def guild(self, info: Info) -> Guild | None:
        if self.row.guild_id is None or not await access.can_read(info, self.row.guild_id):
            return None
        row = await info.context.loaders.by_id(models.Guild).load(self.row.guild_id)
        return Guild.from_model(row) if row is not None else None

    @strawberry.field(description="The author; null once their account is gone.")
    async def user(self, info: Info) -> UserType | None:
        return await load_user(info, self.row.user_id)


ClubAnalysisOrder = strawberry.enum(
    analyses_service.AnalysisOrder, name="ClubAnalysisOrder", description="NEWEST unless said otherwise."
)


@strawberry.input
class GuildInput:
    discord_id: str = strawberry.field(metadata=max_length(MAX_DISCORD_ID))
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    settings: JSON | None = strawberry.field(default=None, description="Merged into existing settings (RFC 7396).")


@strawberry.input
class ClubAnalysisImageInput:
    image_url: str = strawberry.field(metadata=max_length(analyses_service.MAX_URL))
    original_name: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    file_size: int | None = None


@strawberry.input
class ClubMetricInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    value: float
    unit: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    category: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))


@strawberry.input
class ClubAnalysisInput:
    guild_id: strawberry.ID
    title: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    summary: str = strawberry.field(metadata=max_length(MAX_TEXT))
    confidence: float
    images: list[ClubAnalysisImageInput] | None = None
    metrics: list[ClubMetricInput] | None = None
    on_behalf_of_discord_id: str | None = strawberry.field(
        default=None,
        description="A bot's (`communities:act_as`): credit it to the live user with this Discord id, "
        "who must be allowed to post it themself.",
        metadata=max_length(MAX_NAME),
    )


@strawberry.input
class ClubAnalysisUpdate:
    title: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    summary: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_TEXT))
    confidence: float | None = strawberry.UNSET


@strawberry.input
class ChatMessageInput:
    conversation_id: strawberry.ID | None = None
    guild_id: strawberry.ID | None = None
    text: str = strawberry.field(metadata=max_length(chat_service.MAX_MESSAGE))
    on_behalf_of_discord_id: str | None = strawberry.field(
        default=None,
        description="A bot's (`communities:act_as`): credit it to the live user with this Discord id, "
        "who must be allowed to post it themself.",
        metadata=max_length(MAX_NAME),
    )
