"""A user renames and deletes their conversations (issue 17, Communities); deleting one ends its
live streams and takes its messages with it."""

from __future__ import annotations

import uuid

from tests.communities.support import new_guild, new_member, staff
from tests.communities.test_chat import ADDED, CREATE, post, refused, subscribers
from tests.support import GraphQLWS, LiveServer, new_user

RENAME = "mutation($id: ID!, $t: String) { renameConversation(id: $id, title: $t) { id title updatedAt } }"
DELETE = "mutation($id: ID!) { deleteConversation(id: $id) }"
READ = "query($id: ID!) { conversation(id: $id) { id title messages { totalCount } } }"


async def test_rename_and_delete_a_conversation(server: LiveServer) -> None:
    owner = await new_user(server)
    conversation = (await server.data(CREATE, {"title": "Help"}, token=owner))["createConversation"]
    cid = conversation["id"]
    renamed = (await server.data(RENAME, {"id": cid, "t": "Billing é"}, token=owner))["renameConversation"]
    assert renamed["title"] == "Billing é"
    cleared = (await server.data(RENAME, {"id": cid, "t": None}, token=owner))["renameConversation"]
    assert cleared["title"] is None
    await post(server, owner, conversationId=cid, text="one")
    assert (await server.data(READ, {"id": cid}, token=owner))["conversation"]["messages"]["totalCount"] == 1

    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {owner}") as ws:
        await ws.subscribe(ADDED, {"c": cid})
        await subscribers(server, f"chat:conversation:{cid}")
        assert (await server.data(DELETE, {"id": cid}, token=owner))["deleteConversation"] is True
        assert await refused(ws) == "NOT_FOUND"  # the stream ends with the conversation
    assert (await server.data(READ, {"id": cid}, token=owner))["conversation"] is None
    assert await server.error_code(DELETE, {"id": cid}, token=owner) == "NOT_FOUND"


async def test_bad_requests_change_nothing(server: LiveServer) -> None:
    owner = await new_user(server)
    other = await new_user(server)
    cid = (await server.data(CREATE, {"title": "mine"}, token=owner))["createConversation"]["id"]
    assert await server.error_code(RENAME, {"id": cid, "t": "x"}) == "UNAUTHENTICATED"
    assert await server.error_code(RENAME, {"id": cid, "t": "hijacked"}, token=other) == "FORBIDDEN"
    assert await server.error_code(DELETE, {"id": cid}, token=other) == "FORBIDDEN"
    assert await server.error_code(RENAME, {"id": cid, "t": "x" * 10_000}, token=owner) == "BAD_USER_INPUT"
    assert await server.error_code(RENAME, {"id": "nope", "t": "x"}, token=owner) == "BAD_USER_INPUT"
    assert await server.error_code(RENAME, {"id": str(uuid.uuid4()), "t": "x"}, token=owner) == "NOT_FOUND"
    assert (await server.data(READ, {"id": cid}, token=owner))["conversation"]["title"] == "mine"


async def test_a_conversation_about_a_guild_is_listed_under_it(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    member, _ = await new_member(server, bot, guild["id"])
    create = """mutation($t: String, $g: ID) { createConversation(title: $t, guildId: $g) {
      id guild { id name } } }"""
    about = (await server.data(create, {"t": "raid plans", "g": guild["id"]}, token=member))["createConversation"]
    assert about["guild"] == {"id": guild["id"], "name": guild["name"]}
    loose = (await server.data(create, {"t": "private notes"}, token=member))["createConversation"]
    assert loose["guild"] is None
    listing = "query($g: ID) { conversations(guildId: $g) { totalCount nodes { id } } }"
    assert (await server.data(listing, {"g": guild["id"]}, token=member))["conversations"] == {
        "totalCount": 1,
        "nodes": [{"id": about["id"]}],
    }
    assert (await server.data(listing, {}, token=member))["conversations"]["totalCount"] == 2
    # Only a member names the guild, in a conversation or a listing; a missing one is NOT_FOUND.
    stranger = await new_user(server)
    assert await server.error_code(create, {"g": guild["id"]}, token=stranger) == "FORBIDDEN"
    assert await server.error_code(listing, {"g": guild["id"]}, token=stranger) == "FORBIDDEN"
    assert await server.error_code(listing, {"g": str(uuid.uuid4())}, token=member) == "NOT_FOUND"
    assert await server.error_code(listing, {"g": "nope"}, token=member) == "BAD_USER_INPUT"
    # A stranger's own list is empty, as ever.
    assert (await server.data(listing, {}, token=stranger))["conversations"]["totalCount"] == 0
