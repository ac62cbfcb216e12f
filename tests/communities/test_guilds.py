"""Guilds: find-or-create by Discord id, atomic settings merges, members and their roles."""

from __future__ import annotations

import asyncio
import uuid

from tests.communities.support import GUILD_FIELDS, add_member, new_guild, new_member, staff, user_id_of
from tests.support import LiveServer, new_admin, new_user

UPSERT = f"mutation($input: GuildInput!) {{ upsertGuild(input: $input) {{ {GUILD_FIELDS} }} }}"
UPDATE_SETTINGS = "mutation($id: ID!, $s: JSON!) { updateGuildSettings(id: $id, settings: $s) { settings } }"


async def test_upsert_finds_or_creates_by_discord_id_under_concurrency(server: LiveServer) -> None:
    bot, _ = await staff(server)
    discord_id = str(uuid.uuid4().int)[:18]
    calls = [
        server.gql(UPSERT, {"input": {"discordId": discord_id, "name": f"name {i}"}}, token=bot) for i in range(30)
    ]
    bodies = await asyncio.gather(*calls)
    assert all("errors" not in body for body in bodies), [b["errors"] for b in bodies if "errors" in b]
    assert len({body["data"]["upsertGuild"]["id"] for body in bodies}) == 1
    found = await server.data("query($d: String!) { guild(discordId: $d) { id name } }", {"d": discord_id}, token=bot)
    assert found["guild"]["name"].startswith("name ")


async def test_concurrent_settings_updates_of_different_keys_both_survive(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot, settings={"language": "en", "features": {"chatBot": True}})
    patches = [{f"key{i}": i} for i in range(20)] + [{"features": {"clubAnalytics": True}}]
    bodies = await asyncio.gather(
        *(server.gql(UPDATE_SETTINGS, {"id": guild["id"], "s": patch}, token=bot) for patch in patches)
    )
    assert all("errors" not in body for body in bodies)
    data = await server.data("query($id: ID!) { guild(id: $id) { settings } }", {"id": guild["id"]}, token=bot)
    settings = data["guild"]["settings"]
    assert {f"key{i}": i for i in range(20)}.items() <= settings.items()
    # A nested object merges key by key (RFC 7396); null removes a key.
    assert settings["features"] == {"chatBot": True, "clubAnalytics": True}
    assert settings["language"] == "en"
    removed = await server.data(UPDATE_SETTINGS, {"id": guild["id"], "s": {"language": None}}, token=bot)
    assert "language" not in removed["updateGuildSettings"]["settings"]


async def test_settings_must_be_a_bounded_object(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot, settings={"a": 1})
    deep: dict[str, object] = {}
    for _ in range(100):
        deep = {"x": deep}
    for bad in ([1, 2], "text", deep, {"big": "x" * 70_000}):
        assert await server.error_code(UPDATE_SETTINGS, {"id": guild["id"], "s": bad}, token=bot) == "BAD_USER_INPUT"
    data = await server.data("query($id: ID!) { guild(id: $id) { settings } }", {"id": guild["id"]}, token=bot)
    assert data["guild"]["settings"] == {"a": 1}


async def test_guild_administration_needs_permission_or_a_guild_role(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    stranger = await new_user(server)
    member, _ = await new_member(server, bot, guild["id"])
    admin, _ = await new_member(server, bot, guild["id"], roles=["admin"])
    owner, _ = await new_member(server, bot, guild["id"], roles=["owner"])
    upsert = {"input": {"discordId": "1", "name": "x"}}
    assert await server.error_code(UPSERT, upsert, token=member) == "FORBIDDEN"
    assert await server.error_code(UPSERT, upsert) == "UNAUTHENTICATED"
    patch = {"id": guild["id"], "s": {"k": 1}}
    assert await server.error_code(UPDATE_SETTINGS, patch, token=stranger) == "FORBIDDEN"
    assert await server.error_code(UPDATE_SETTINGS, patch, token=member) == "FORBIDDEN"
    await server.data(UPDATE_SETTINGS, patch, token=admin)
    # Admins manage members but cannot make admins; owners can.
    newcomer = await user_id_of(server, await new_user(server))
    await add_member(server, admin, guild["id"], newcomer, ["helper"])
    promote = """mutation($g: ID!, $u: ID!) { addGuildMember(guildId: $g, userId: $u, roles: ["admin"]) { roles } }"""
    assert await server.error_code(promote, {"g": guild["id"], "u": newcomer}, token=admin) == "FORBIDDEN"
    promoted = await server.data(promote, {"g": guild["id"], "u": newcomer}, token=owner)
    assert promoted["addGuildMember"]["roles"] == ["admin"]
    # Strangers cannot see the guild; members can.
    read = "query($id: ID!) { guild(id: $id) { name members(first: 10) { totalCount nodes { roles } } } }"
    assert await server.error_code(read, {"id": guild["id"]}, token=stranger) == "FORBIDDEN"
    seen = await server.data(read, {"id": guild["id"]}, token=member)
    assert seen["guild"]["members"]["totalCount"] == 4


async def test_membership_roles_and_leaving(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    token, user_id = await new_member(server, bot, guild["id"], roles=["member", "member", " raider "])
    read = "query($id: ID!) { guild(id: $id) { members { nodes { roles user { id } } } } }"
    members = (await server.data(read, {"id": guild["id"]}, token=token))["guild"]["members"]["nodes"]
    assert members == [{"roles": ["member", "raider"], "user": {"id": user_id}}]
    # Without roles, an existing member keeps theirs.
    assert (await add_member(server, bot, guild["id"], user_id))["roles"] == ["member", "raider"]
    leave = "mutation($g: ID!, $u: ID!) { removeGuildMember(guildId: $g, userId: $u) }"
    assert (await server.data(leave, {"g": guild["id"], "u": user_id}, token=token))["removeGuildMember"] is True
    assert (await server.data(leave, {"g": guild["id"], "u": user_id}, token=bot))["removeGuildMember"] is False
    assert await server.error_code(read, {"id": guild["id"]}, token=token) == "FORBIDDEN"


async def test_bad_membership_input(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    add = "mutation($g: ID!, $u: ID!, $r: [String!]) { addGuildMember(guildId: $g, userId: $u, roles: $r) { roles } }"
    user_id = await user_id_of(server, await new_user(server))
    assert await server.error_code(add, {"g": guild["id"], "u": str(uuid.uuid4())}, token=bot) == "NOT_FOUND"
    assert await server.error_code(add, {"g": str(uuid.uuid4()), "u": user_id}, token=bot) == "NOT_FOUND"
    assert await server.error_code(add, {"g": "nope", "u": user_id}, token=bot) == "BAD_USER_INPUT"
    assert await server.error_code(add, {"g": guild["id"], "u": user_id, "r": [""]}, token=bot) == "BAD_USER_INPUT"
    bad_guild = {"input": {"discordId": " ", "name": "x"}}
    assert await server.error_code(UPSERT, bad_guild, token=bot) == "BAD_USER_INPUT"
    read = "query($id: ID!) { guild(id: $id) { members { totalCount } } }"
    assert (await server.data(read, {"id": guild["id"]}, token=bot))["guild"]["members"]["totalCount"] == 0


async def test_guild_list_search_and_pagination(server: LiveServer) -> None:
    bot, _ = await staff(server)
    tag = uuid.uuid4().hex[:8]
    for name in ("Alpha", "Beta", "Gamma"):
        await new_guild(server, bot, name=f"{name} {tag}")
    query = """query($s: String, $after: String) {
      guilds(search: $s, first: 2, after: $after) { totalCount nodes { name } pageInfo { hasNextPage endCursor } }
    }"""
    first = (await server.data(query, {"s": tag.upper()}, token=bot))["guilds"]
    assert first["totalCount"] == 3
    assert [n["name"] for n in first["nodes"]] == [f"Alpha {tag}", f"Beta {tag}"]
    after = first["pageInfo"]["endCursor"]
    second = (await server.data(query, {"s": tag, "after": after}, token=bot))["guilds"]
    assert [n["name"] for n in second["nodes"]] == [f"Gamma {tag}"]
    assert second["pageInfo"]["hasNextPage"] is False
    # A member sees only their guilds.
    guild = await new_guild(server, bot, name=f"Delta {tag}")
    member, _ = await new_member(server, bot, guild["id"])
    mine = (await server.data(query, {"s": tag}, token=member))["guilds"]
    assert [n["name"] for n in mine["nodes"]] == [f"Delta {tag}"]


async def test_members_see_each_other_but_not_each_others_email(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    me, my_id = await new_member(server, bot, guild["id"])
    _, their_id = await new_member(server, bot, guild["id"])
    read = "query($id: ID!) { guild(id: $id) { members { nodes { user { id email roles { name } } } } } }"
    users = {
        m["user"]["id"]: m["user"]
        for m in (await server.data(read, {"id": guild["id"]}, token=me))["guild"]["members"]["nodes"]
    }
    assert users[their_id]["email"] is None and users[their_id]["roles"] == []
    assert users[my_id]["email"] is not None

    async def emails(token: str) -> dict[str, str | None]:
        nodes = (await server.data(read, {"id": guild["id"]}, token=token))["guild"]["members"]["nodes"]
        return {m["user"]["id"]: m["user"]["email"] for m in nodes}

    assert (await emails(bot))[their_id] is None  # guilds:write is not users:admin
    people_admin, _ = await new_admin(server, ("guilds:write", "users:admin"))
    assert (await emails(people_admin))[their_id] is not None


async def test_a_guild_keeps_at_least_one_owner(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    first, first_id = await new_member(server, bot, guild["id"], roles=["owner"])
    second, second_id = await new_member(server, bot, guild["id"], roles=["owner"])
    leave = "mutation($g: ID!, $u: ID!) { removeGuildMember(guildId: $g, userId: $u) }"
    # Both owners try to leave at once: one may, the other is refused.
    bodies = await asyncio.gather(
        server.gql(leave, {"g": guild["id"], "u": first_id}, token=first),
        server.gql(leave, {"g": guild["id"], "u": second_id}, token=second),
    )
    outcomes = sorted("errors" in body for body in bodies)
    assert outcomes == [False, True], bodies
    assert next(b for b in bodies if "errors" in b)["errors"][0]["extensions"]["code"] == "CONFLICT"
    remaining = first if "errors" in bodies[0] else second
    remaining_id = first_id if remaining == first else second_id
    demote = 'mutation($g: ID!, $u: ID!) { addGuildMember(guildId: $g, userId: $u, roles: ["member"]) { roles } }'
    assert await server.error_code(demote, {"g": guild["id"], "u": remaining_id}, token=remaining) == "CONFLICT"
