"""Factories for the communities tests: plain calls of the public API."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support import LiveServer, new_admin, new_user

GUILD_FIELDS = "id discordId name settings"


async def staff(server: LiveServer) -> tuple[str, str]:
    """A platform account holding `guilds:write` (the Discord bot)."""
    return await new_admin(server, ("guilds:write",))


async def user_id_of(server: LiveServer, token: str) -> str:
    data = await server.data("{ me { id } }", token=token)
    user_id: str = data["me"]["id"]
    return user_id


async def new_guild(server: LiveServer, bot: str, name: str = "Slimy Club", **fields: Any) -> dict[str, Any]:
    data = await server.data(
        f"mutation($input: GuildInput!) {{ upsertGuild(input: $input) {{ {GUILD_FIELDS} }} }}",
        {"input": {"discordId": str(uuid.uuid4().int)[:18], "name": name, **fields}},
        token=bot,
    )
    guild: dict[str, Any] = data["upsertGuild"]
    return guild


async def add_member(
    server: LiveServer, bot: str, guild_id: str, user_id: str, roles: list[str] | None = None
) -> dict[str, Any]:
    data = await server.data(
        """mutation($g: ID!, $u: ID!, $roles: [String!]) {
          addGuildMember(guildId: $g, userId: $u, roles: $roles) { roles joinedAt user { id } }
        }""",
        {"g": guild_id, "u": user_id, "roles": roles},
        token=bot,
    )
    member: dict[str, Any] = data["addGuildMember"]
    return member


async def new_member(server: LiveServer, bot: str, guild_id: str, roles: list[str] | None = None) -> tuple[str, str]:
    """A new user who belongs to the guild: (access token, user id)."""
    token = await new_user(server)
    user_id = await user_id_of(server, token)
    await add_member(server, bot, guild_id, user_id, roles)
    return token, user_id


CREATE_ANALYSIS = """
mutation($input: ClubAnalysisInput!) {
  createClubAnalysis(input: $input) {
    id title summary confidence user { id } guild { id }
    images { imageUrl originalName fileSize } metrics { name value unit category }
  }
}
"""


async def new_analysis(server: LiveServer, token: str, guild_id: str, **fields: Any) -> dict[str, Any]:
    values = {"guildId": guild_id, "summary": "Club summary", "confidence": 0.5, **fields}
    data = await server.data(CREATE_ANALYSIS, {"input": values}, token=token)
    analysis: dict[str, Any] = data["createClubAnalysis"]
    return analysis
