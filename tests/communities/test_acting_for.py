"""A bot posts for the Discord user behind a command (`onBehalfOfDiscordId`, `communities:act_as`):
the analysis or message is credited to that user, who must be allowed to post it themself."""

from __future__ import annotations

import uuid

from tests.communities.support import add_member, new_guild, staff
from tests.support import LiveServer, new_admin

UPSERT = "mutation($d: String!) { upsertDiscordUser(input: {discordId: $d, username: $d}) { id } }"
POST = "mutation($input: ChatMessageInput!) { postChatMessage(input: $input) { id text user { id } } }"
CREATE_ANALYSIS = "mutation($input: ClubAnalysisInput!) { createClubAnalysis(input: $input) { id user { id } } }"


async def test_a_bot_credits_the_discord_user(server: LiveServer) -> None:
    bot, _ = await staff(server)  # guilds:write: runs the guild
    actor, actor_id = await new_admin(server, ("communities:act_as", "users:admin"))
    guild = await new_guild(server, bot)
    discord_id = str(uuid.uuid4().int)[:18]
    member_id = (await server.data(UPSERT, {"d": discord_id}, token=actor))["upsertDiscordUser"]["id"]
    await add_member(server, bot, guild["id"], member_id)

    analysis = {"guildId": guild["id"], "summary": "for them", "confidence": 0.9, "onBehalfOfDiscordId": discord_id}
    created = (await server.data(CREATE_ANALYSIS, {"input": analysis}, token=actor))["createClubAnalysis"]
    assert created["user"]["id"] == member_id
    posted = await server.data(
        POST, {"input": {"guildId": guild["id"], "text": "hi", "onBehalfOfDiscordId": discord_id}}, token=actor
    )
    assert posted["postChatMessage"]["user"]["id"] == member_id

    # Without the permission, for nobody, or for someone who may not post there: refused, nothing stored.
    assert await server.error_code(CREATE_ANALYSIS, {"input": analysis}, token=bot) == "FORBIDDEN"
    nobody = {**analysis, "onBehalfOfDiscordId": "000000000000000000"}
    assert await server.error_code(CREATE_ANALYSIS, {"input": nobody}, token=actor) == "NOT_FOUND"
    outsider = str(uuid.uuid4().int)[:18]
    await server.data(UPSERT, {"d": outsider}, token=actor)
    outside = {**analysis, "onBehalfOfDiscordId": outsider}
    assert await server.error_code(CREATE_ANALYSIS, {"input": outside}, token=actor) == "FORBIDDEN"
    chat_outside = {"guildId": guild["id"], "text": "x", "onBehalfOfDiscordId": outsider}
    assert await server.error_code(POST, {"input": chat_outside}, token=actor) == "FORBIDDEN"
    listing = "query($g: ID!) { guild(id: $g) { clubAnalyses { totalCount nodes { user { id } } } } }"
    seen = (await server.data(listing, {"g": guild["id"]}, token=bot))["guild"]["clubAnalyses"]
    assert seen == {"totalCount": 1, "nodes": [{"user": {"id": member_id}}]}
    assert actor_id != member_id
