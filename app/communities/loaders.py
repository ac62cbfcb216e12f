"""Batch functions for the nested connections of guilds, members and conversations.

Each batch of `PageKey`s costs one statement per distinct (page size, cursor, filter): a LATERAL
join over the parents' ids, so 5 or 500 guilds with their members and analyses cost the same
number of statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.loaders import PageKey, batched_counts, batched_pages
from app.communities import models
from app.communities.service import analyses, guilds

# -- guild members ------------------------------------------------------------------------------

UG = models.UserGuild


def _members(key: PageKey) -> Select[Any]:
    query = guilds.live_members()
    if key.after is not None:
        query = query.where(tuple_(col(UG.created_at), col(UG.id)) > tuple_(*key.after))
    return query.order_by(col(UG.created_at), col(UG.id))


async def members(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    return await batched_pages(session, keys, model=UG, inner=_members, parent_columns=[col(UG.guild_id)])


async def member_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(
        session, keys, base=lambda key: guilds.live_members(), parent_columns=[col(UG.guild_id)]
    )


# -- club analyses of a guild, and of one member in a guild ---------------------------------------

CA = models.ClubAnalysis


def _analyses(key: PageKey) -> Select[Any]:
    """Newest first; `extra` is the minimum confidence."""
    query: Select[Any] = analyses.list_query(
        analyses.AnalysisFilter(min_confidence=key.extra),
        order=analyses.AnalysisOrder.NEWEST,
        after=key.after,
        limit=0,
    ).limit(None)
    return query


def _analyses_base(key: PageKey) -> Select[Any]:
    base: Select[Any] = analyses.filtered(analyses.AnalysisFilter(min_confidence=key.extra))
    return base


async def guild_analyses(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    return await batched_pages(session, keys, model=CA, inner=_analyses, parent_columns=[col(CA.guild_id)])


async def guild_analysis_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(session, keys, base=_analyses_base, parent_columns=[col(CA.guild_id)])


async def member_analyses(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    columns = [col(CA.guild_id), col(CA.user_id)]
    return await batched_pages(session, keys, model=CA, inner=_analyses, parent_columns=columns)


async def member_analysis_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(session, keys, base=_analyses_base, parent_columns=[col(CA.guild_id), col(CA.user_id)])


# -- the viewer's own memberships ----------------------------------------------------------------


def memberships_of(user_id: uuid.UUID) -> Callable[[AsyncSession, Sequence[uuid.UUID]], Any]:
    async def fetch(session: AsyncSession, guild_ids: Sequence[uuid.UUID]) -> list[models.UserGuild | None]:
        rows = (
            await session.scalars(select(UG).where(col(UG.user_id) == user_id, col(UG.guild_id).in_(guild_ids)))
        ).all()
        found = {row.guild_id: row for row in rows}
        return [found.get(guild_id) for guild_id in guild_ids]

    return fetch
