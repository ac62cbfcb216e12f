"""Club analyses: all-or-nothing creation, creator-only changes, cascades, search and ordering."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql

from app.communities import models
from app.communities.service import analyses
from tests.communities.support import CREATE_ANALYSIS, new_analysis, new_guild, new_member, staff
from tests.support import LiveServer, new_user

UPDATE = "mutation($id: ID!, $input: ClubAnalysisUpdate!) { updateClubAnalysis(id: $id, input: $input) { title confidence } }"
DELETE = "mutation($id: ID!) { deleteClubAnalysis(id: $id) }"


async def _count(server: LiveServer, model: type, **where: object) -> int:
    async with server.deps.db.session() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)


async def test_create_with_images_and_metrics(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, user_id = await new_member(server, bot, guild["id"])
    created = await new_analysis(
        server,
        token,
        guild["id"],
        title="Monthly Club Performance",
        confidence=0.95,
        images=[{"imageUrl": "https://cdn.example/1.png", "originalName": "1.png", "fileSize": 1200}],
        metrics=[
            {"name": "members", "value": 120, "unit": "people", "category": "growth"},
            {"name": "power", "value": 9.5},
        ],
    )
    assert created["user"]["id"] == user_id and created["guild"]["id"] == guild["id"]
    assert created["images"] == [{"imageUrl": "https://cdn.example/1.png", "originalName": "1.png", "fileSize": 1200}]
    assert [m["name"] for m in created["metrics"]] == ["members", "power"]


async def test_one_invalid_metric_stores_nothing(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, user_id = await new_member(server, bot, guild["id"])
    images = [{"imageUrl": "https://cdn.example/a.png"}]
    bad_inputs: list[dict[str, Any]] = [
        {"metrics": [{"name": "ok", "value": 1}, {"name": "  ", "value": 2}]},
        {"confidence": 1.5},
        {"confidence": -0.1},
        {"images": [{"imageUrl": "https://cdn.example/b.png", "fileSize": -1}]},
        {"summary": ""},
        {"metrics": [{"name": "x" * 500, "value": 1}]},
    ]
    for bad in bad_inputs:
        values = {"guildId": guild["id"], "summary": "s", "confidence": 0.5, "images": images, **bad}
        body = await server.gql(CREATE_ANALYSIS, {"input": values}, token=token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (bad, body)
        assert body["data"] is None
    assert await _count(server, models.ClubAnalysis, user_id=uuid.UUID(user_id)) == 0
    async with server.deps.db.session() as session:
        orphans = await session.scalar(
            text(
                "SELECT count(*) FROM club_analysis_images i WHERE i.image_url LIKE 'https://cdn.example/%' "
                "AND NOT EXISTS (SELECT 1 FROM club_analyses a WHERE a.id = i.analysis_id)"
            )
        )
    assert orphans == 0
    # Not a member: FORBIDDEN, and nothing stored either.
    stranger = await new_user(server)
    values = {"guildId": guild["id"], "summary": "s", "confidence": 0.5}
    assert await server.error_code(CREATE_ANALYSIS, {"input": values}, token=stranger) == "FORBIDDEN"
    assert await _count(server, models.ClubAnalysis, guild_id=uuid.UUID(guild["id"])) == 0


async def test_only_the_creator_changes_an_analysis_and_admins_may_delete(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    author, _ = await new_member(server, bot, guild["id"])
    other, _ = await new_member(server, bot, guild["id"])
    admin, _ = await new_member(server, bot, guild["id"], roles=["admin"])
    analysis = await new_analysis(server, author, guild["id"], title="Mine")
    change = {"id": analysis["id"], "input": {"title": "Stolen"}}
    assert await server.error_code(UPDATE, change, token=other) == "FORBIDDEN"
    assert await server.error_code(UPDATE, change, token=admin) == "FORBIDDEN"
    assert await server.error_code(UPDATE, {"id": analysis["id"], "input": {"confidence": 2}}, token=author) == (
        "BAD_USER_INPUT"
    )
    updated = await server.data(
        UPDATE, {"id": analysis["id"], "input": {"title": "Ours", "confidence": 0.7}}, token=author
    )
    assert updated["updateClubAnalysis"] == {"title": "Ours", "confidence": 0.7}
    assert await server.error_code(DELETE, {"id": analysis["id"]}, token=other) == "FORBIDDEN"
    assert (await server.data(DELETE, {"id": analysis["id"]}, token=admin))["deleteClubAnalysis"] is True
    assert await server.error_code(DELETE, {"id": analysis["id"]}, token=author) == "NOT_FOUND"


async def test_deleting_a_guild_removes_its_analyses_images_metrics_and_messages(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, _ = await new_member(server, bot, guild["id"])
    analysis = await new_analysis(
        server,
        token,
        guild["id"],
        images=[{"imageUrl": "https://cdn.example/x.png"}],
        metrics=[{"name": "m", "value": 1}],
    )
    await server.data(
        'mutation($g: ID!) { postChatMessage(input: {guildId: $g, text: "hello"}) { id } }',
        {"g": guild["id"]},
        token=token,
    )
    analysis_id, guild_id = uuid.UUID(analysis["id"]), uuid.UUID(guild["id"])
    assert await _count(server, models.ChatMessage, guild_id=guild_id) == 1
    delete = "mutation($id: ID!) { deleteGuild(id: $id) }"
    assert await server.error_code(delete, {"id": guild["id"]}, token=token) == "FORBIDDEN"
    assert (await server.data(delete, {"id": guild["id"]}, token=bot))["deleteGuild"] is True
    assert await _count(server, models.ClubAnalysis, id=analysis_id) == 0
    assert await _count(server, models.ClubAnalysisImage, analysis_id=analysis_id) == 0
    assert await _count(server, models.ClubMetric, analysis_id=analysis_id) == 0
    assert await _count(server, models.ChatMessage, guild_id=guild_id) == 0
    assert await _count(server, models.UserGuild, guild_id=guild_id) == 0


SEARCH = """
query($g: ID, $s: String, $min: Float, $order: ClubAnalysisOrder!, $after: String, $first: Int) {
  clubAnalyses(guildId: $g, search: $s, minConfidence: $min, orderBy: $order, first: $first, after: $after) {
    totalCount nodes { title confidence } pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_search_is_case_insensitive_over_title_and_summary(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, _ = await new_member(server, bot, guild["id"])
    await new_analysis(server, token, guild["id"], title="Monthly Club Performance", summary="growth")
    await new_analysis(server, token, guild["id"], title="Roster", summary="Raid PERFORMANCE is up")
    await new_analysis(server, token, guild["id"], title="Other", summary="nothing to see")
    await new_analysis(server, token, guild["id"], title="100%_done", summary="literal wildcards")
    for needle in ("perf", "PERF", "Performance"):
        found = await server.data(SEARCH, {"g": guild["id"], "s": needle, "order": "NEWEST"}, token=token)
        assert sorted(n["title"] for n in found["clubAnalyses"]["nodes"]) == ["Monthly Club Performance", "Roster"]
    # % and _ are matched literally.
    found = await server.data(SEARCH, {"g": guild["id"], "s": "%_", "order": "NEWEST"}, token=token)
    assert [n["title"] for n in found["clubAnalyses"]["nodes"]] == ["100%_done"]


async def test_search_uses_the_trigram_indexes(server: LiveServer) -> None:
    query = analyses.list_query(
        analyses.AnalysisFilter(search="perf"), order=analyses.AnalysisOrder.NEWEST, after=None, limit=50
    )
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with server.deps.db.session() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.execute(text("EXPLAIN " + sql))).scalars().all())
    assert "ix_club_analyses_title_trgm" in plan and "ix_club_analyses_summary_trgm" in plan, plan


async def test_order_by_confidence_and_date_with_keyset_pages(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, _ = await new_member(server, bot, guild["id"])
    for index, confidence in enumerate([0.2, 0.9, 0.5, 0.9, 0.1]):
        await new_analysis(server, token, guild["id"], title=f"a{index}", confidence=confidence)

    async def walk(order: str, min_confidence: float | None = None) -> list[str]:
        titles: list[str] = []
        after = None
        while True:
            variables = {"g": guild["id"], "order": order, "first": 2, "after": after, "min": min_confidence}
            page = (await server.data(SEARCH, variables, token=token))["clubAnalyses"]
            titles += [n["title"] for n in page["nodes"]]
            if not page["pageInfo"]["hasNextPage"]:
                return titles
            after = page["pageInfo"]["endCursor"]

    assert await walk("NEWEST") == ["a4", "a3", "a2", "a1", "a0"]
    assert await walk("OLDEST") == ["a0", "a1", "a2", "a3", "a4"]
    assert await walk("MOST_CONFIDENT") == ["a3", "a1", "a2", "a0", "a4"]
    assert await walk("LEAST_CONFIDENT") == ["a4", "a0", "a2", "a1", "a3"]
    assert await walk("MOST_CONFIDENT", 0.5) == ["a3", "a1", "a2"]
    # A cursor of one ordering is refused by another; a bad minConfidence too.
    page = await server.data(SEARCH, {"g": guild["id"], "order": "NEWEST", "first": 1}, token=token)
    cursor = page["clubAnalyses"]["pageInfo"]["endCursor"]
    wrong = {"g": guild["id"], "order": "MOST_CONFIDENT", "after": cursor}
    assert await server.error_code(SEARCH, wrong, token=token) == "BAD_USER_INPUT"
    assert await server.error_code(SEARCH, {"g": guild["id"], "order": "NEWEST", "min": 3}, token=token) == (
        "BAD_USER_INPUT"
    )


async def test_analyses_are_visible_to_members_only(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, _ = await new_member(server, bot, guild["id"])
    await new_analysis(server, token, guild["id"], title="secret")
    stranger = await new_user(server)
    assert await server.error_code(SEARCH, {"g": guild["id"], "order": "NEWEST"}, token=stranger) == "FORBIDDEN"
    # Without a guild, a user sees the analyses of their own guilds only.
    mine = await server.data(SEARCH, {"order": "NEWEST"}, token=stranger)
    assert mine["clubAnalyses"]["totalCount"] == 0
    theirs = await server.data(SEARCH, {"order": "NEWEST"}, token=token)
    assert [n["title"] for n in theirs["clubAnalyses"]["nodes"]] == ["secret"]
