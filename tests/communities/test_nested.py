"""Nested reads cost a fixed number of SQL statements, whatever the number of parents."""

from __future__ import annotations

import uuid

from app.accounts import service as accounts
from app.communities.service import analyses, guilds
from tests.communities.support import user_id_of
from tests.conftest import QUIET_SWEEPERS, make_settings
from tests.support import LiveServer, counted, live_server, new_user

NESTED = """
query($search: String!) {
  guilds(search: $search, first: 100) {
    nodes {
      name
      members(first: 10) {
        totalCount
        nodes {
          roles
          user { id username }
          clubAnalyses(first: 5) { nodes { title images { imageUrl } metrics { name value } } }
        }
      }
      clubAnalyses(first: 5, minConfidence: 0.1) { totalCount nodes { title confidence user { id } } }
    }
  }
}
"""


async def _community(server: LiveServer, *, guild_count: int, viewer_id: uuid.UUID) -> str:
    """`guild_count` guilds of 3 members with 6 analyses each (one image, two metrics), built with
    the services; the viewer belongs to every guild. Each analysis commits on its own, so that
    "newest" is well defined (now() is the transaction's time)."""
    tag = uuid.uuid4().hex[:10]
    async with server.deps.db.session() as session:
        for g in range(guild_count):
            guild = await guilds.upsert_guild(
                session, discord_id=f"{tag}{g}", name=f"{tag} guild {g:03}", settings=None
            )
            await guilds.add_member(session, guild_id=guild.id, user_id=viewer_id, roles=["viewer"])
            for m in range(3):
                user = await accounts.upsert_discord_user(
                    session, discord_id=f"{tag}-{g}-{m}", username=f"u{g}-{m}", global_name=None, avatar_url=None
                )
                await guilds.add_member(session, guild_id=guild.id, user_id=user.id, roles=["member"])
                for a in range(6):
                    await analyses.create_analysis(
                        session,
                        guild_id=guild.id,
                        user_id=user.id,
                        title=f"{g}-{m}-{a}",
                        summary="s",
                        confidence_=a / 10,
                        images=[analyses.ImageSpec(f"https://cdn.example/{g}/{m}/{a}.png")],
                        metrics=[analyses.MetricSpec("power", a), analyses.MetricSpec("size", m)],
                    )
                    await session.commit()
    return tag


async def test_statement_count_is_the_same_for_5_and_50_guilds(database_url: str) -> None:
    # 100 guilds' members' analyses with their images and metrics could return millions of objects
    # (an analysis holds up to 50 images and 500 metrics), so the cost limit refuses NESTED by
    # design; the subject here is the statement count, on a server of its own without the limit and
    # whose sweepers sleep (every statement counted is the query's). It remembers no caller, so both
    # counts hold the same check of the login: building a community can outlast the cache.
    settings = make_settings(**QUIET_SWEEPERS, max_query_cost=0, auth_cache_seconds=0)
    async with live_server(settings, database_url) as server:
        await _statement_count_is_the_same_for_5_and_50_guilds(server)


async def _statement_count_is_the_same_for_5_and_50_guilds(server: LiveServer) -> None:
    token = await new_user(server)
    viewer_id = uuid.UUID(await user_id_of(server, token))
    small = await _community(server, guild_count=5, viewer_id=viewer_id)
    large = await _community(server, guild_count=50, viewer_id=viewer_id)

    small_data, small_count = await counted(server, NESTED, {"search": small}, token)
    large_data, large_count = await counted(server, NESTED, {"search": large}, token)

    nodes = large_data["guilds"]["nodes"]
    assert len(small_data["guilds"]["nodes"]) == 5 and len(nodes) == 50
    for guild in nodes:
        assert guild["members"]["totalCount"] == 4
        members = [m for m in guild["members"]["nodes"] if m["roles"] == ["member"]]
        assert len(members) == 3
        for member in members:
            titles = [a["title"] for a in member["clubAnalyses"]["nodes"]]
            # The member's latest five, newest first, each with its image and metrics.
            prefix = titles[0].rsplit("-", 1)[0]
            assert titles == [f"{prefix}-{a}" for a in (5, 4, 3, 2, 1)]
            assert all(len(a["images"]) == 1 and len(a["metrics"]) == 2 for a in member["clubAnalyses"]["nodes"])
        assert guild["clubAnalyses"]["totalCount"] == 15  # confidence >= 0.1: five of six per member
        assert len(guild["clubAnalyses"]["nodes"]) == 5
    assert small_count == large_count, (small_count, large_count)
    assert large_count <= 12, large_count
