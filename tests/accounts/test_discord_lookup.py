"""A bot finds the Lodge user behind a Discord id (issue 17, Communities): `users:lookup` or
`users:admin`; read-only, and the user's private fields stay null for a bot."""

from __future__ import annotations

import uuid

from tests.support import LiveServer, new_admin, new_user

UPSERT = "mutation($i: DiscordUserInput!) { upsertDiscordUser(input: $i) { id } }"
LOOKUP = "query($d: String!) { userByDiscordId(discordId: $d) { id username discordId email } }"


async def test_a_bot_finds_a_user_by_discord_id(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    bot, _ = await new_admin(server, ("users:lookup",))
    discord_id = str(uuid.uuid4().int)[:18]
    user_id = (await server.data(UPSERT, {"i": {"discordId": discord_id, "username": "slimy"}}, token=admin))[
        "upsertDiscordUser"
    ]["id"]

    found = (await server.data(LOOKUP, {"d": discord_id}, token=bot))["userByDiscordId"]
    assert found == {"id": user_id, "username": "slimy", "discordId": None, "email": None}  # private: null
    as_admin = (await server.data(LOOKUP, {"d": discord_id}, token=admin))["userByDiscordId"]
    assert as_admin["id"] == user_id and as_admin["discordId"] == discord_id
    assert (await server.data(LOOKUP, {"d": "0"}, token=bot))["userByDiscordId"] is None

    # Deleted users are not found.
    assert await server.data("mutation($id: ID!) { deleteUser(id: $id) }", {"id": user_id}, token=admin)
    assert (await server.data(LOOKUP, {"d": discord_id}, token=bot))["userByDiscordId"] is None


async def test_bad_lookups(server: LiveServer) -> None:
    someone = await new_user(server)
    bot, _ = await new_admin(server, ("users:lookup",))
    assert await server.error_code(LOOKUP, {"d": "1"}) == "UNAUTHENTICATED"
    assert await server.error_code(LOOKUP, {"d": "1"}, token=someone) == "FORBIDDEN"
    assert await server.error_code(LOOKUP, {"d": "1" * 10_000}, token=bot) == "BAD_USER_INPUT"
