"""Chat: conversations, messages with keyset pages, and live delivery after commit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.communities.support import new_guild, new_member, staff, user_id_of
from tests.support import GraphQLWS, LiveServer, new_user

POST = """
mutation($input: ChatMessageInput!) {
  postChatMessage(input: $input) { id text cursor user { id } guild { id } conversation { id } }
}
"""
CREATE = "mutation($title: String) { createConversation(title: $title) { id title user { id } } }"
ADDED = """
subscription($c: ID, $g: ID) {
  chatMessageAdded(conversationId: $c, guildId: $g) { id text user { id } guild { id } conversation { id } }
}
"""


async def post(server: LiveServer, token: str, **input: Any) -> dict[str, Any]:
    data = await server.data(POST, {"input": input}, token=token)
    message: dict[str, Any] = data["postChatMessage"]
    return message


async def subscribers(server: LiveServer, channel: str, count: int = 1) -> None:
    async with asyncio.timeout(10):
        while len(server.deps.hub.subscribers(channel)) < count:
            await asyncio.sleep(0.005)


async def refused(ws: GraphQLWS) -> str:
    """The code of the error that ends a subscription (read through to its `complete`)."""
    message = await ws.receive()
    if message["type"] == "next":
        assert (await ws.receive())["type"] == "complete"
        errors = message["payload"]["errors"]
    else:
        assert message["type"] == "error", message
        errors = message["payload"]
    code: str = errors[0]["extensions"]["code"]
    return code


async def test_conversation_messages_page_both_ways(server: LiveServer) -> None:
    token = await new_user(server)
    conversation = (await server.data(CREATE, {"title": "Help"}, token=token))["createConversation"]
    for i in range(5):
        await post(server, token, conversationId=conversation["id"], text=f"m{i}")
    query = """query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
      conversation(id: $id) { title messages(first: $first, after: $after, last: $last, before: $before) {
        totalCount nodes { text } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }
    }"""
    page = (await server.data(query, {"id": conversation["id"], "first": 3}, token=token))["conversation"]
    assert [n["text"] for n in page["messages"]["nodes"]] == ["m0", "m1", "m2"]
    assert page["messages"]["totalCount"] == 5
    after = page["messages"]["pageInfo"]["endCursor"]
    rest = (await server.data(query, {"id": conversation["id"], "after": after}, token=token))["conversation"]
    assert [n["text"] for n in rest["messages"]["nodes"]] == ["m3", "m4"]
    newest = (await server.data(query, {"id": conversation["id"], "last": 2}, token=token))["conversation"]
    assert [n["text"] for n in newest["messages"]["nodes"]] == ["m3", "m4"]
    assert newest["messages"]["pageInfo"]["hasPreviousPage"] is True
    before = newest["messages"]["pageInfo"]["startCursor"]
    older = await server.data(query, {"id": conversation["id"], "last": 2, "before": before}, token=token)
    assert [n["text"] for n in older["conversation"]["messages"]["nodes"]] == ["m1", "m2"]
    listed = await server.data("{ conversations(first: 5) { nodes { id } } }", token=token)
    assert listed["conversations"]["nodes"] == [{"id": conversation["id"]}]


async def test_conversations_are_private_and_bad_messages_are_refused(server: LiveServer) -> None:
    token = await new_user(server)
    stranger = await new_user(server)
    conversation = (await server.data(CREATE, {}, token=token))["createConversation"]
    read = "query($id: ID!) { conversation(id: $id) { id } }"
    assert await server.error_code(read, {"id": conversation["id"]}, token=stranger) == "FORBIDDEN"
    assert (await server.data(read, {"id": str(uuid.uuid4())}, token=token))["conversation"] is None
    assert await server.error_code(
        POST, {"input": {"conversationId": conversation["id"], "text": "hi"}}, token=stranger
    ) == ("FORBIDDEN")
    for bad in (
        {"text": "nowhere"},
        {"conversationId": conversation["id"], "text": "  "},
        {"conversationId": conversation["id"], "text": "x" * 4001},
        {"conversationId": "1", "text": "x"},
    ):
        assert await server.error_code(POST, {"input": bad}, token=token) == "BAD_USER_INPUT", bad
    assert await server.error_code(POST, {"input": {"conversationId": conversation["id"], "text": "x"}}) == (
        "UNAUTHENTICATED"
    )
    count = "query($id: ID!) { conversation(id: $id) { messages { totalCount } } }"
    assert (await server.data(count, {"id": conversation["id"]}, token=token))["conversation"]["messages"][
        "totalCount"
    ] == 0


async def test_a_guild_member_receives_a_posted_message_and_a_stranger_is_refused(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    listener, _ = await new_member(server, bot, guild["id"])
    speaker, speaker_id = await new_member(server, bot, guild["id"])
    stranger = await new_user(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {stranger}") as ws:
        await ws.subscribe(ADDED, {"g": guild["id"]})
        assert await refused(ws) == "FORBIDDEN"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {listener}") as ws:
        await ws.subscribe(ADDED, {"g": guild["id"]})
        await subscribers(server, f"chat:guild:{guild['id']}")
        posted = await post(server, speaker, guildId=guild["id"], text="gm")
        received = (await ws.next_data())["chatMessageAdded"]
        assert received == {
            "id": posted["id"],
            "text": "gm",
            "user": {"id": speaker_id},
            "guild": {"id": guild["id"]},
            "conversation": None,
        }
        # A failed post publishes nothing: the next message the subscriber sees is the next good one.
        assert await server.error_code(POST, {"input": {"guildId": guild["id"], "text": ""}}, token=speaker) == (
            "BAD_USER_INPUT"
        )
        await post(server, speaker, guildId=guild["id"], text="second")
        assert (await ws.next_data())["chatMessageAdded"]["text"] == "second"


async def test_conversation_owner_subscribes_and_others_cannot(server: LiveServer) -> None:
    owner = await new_user(server)
    other = await new_user(server)
    conversation = (await server.data(CREATE, {}, token=owner))["createConversation"]
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {other}") as ws:
        await ws.subscribe(ADDED, {"c": conversation["id"]})
        assert await refused(ws) == "FORBIDDEN"
    async with GraphQLWS.connect(server.ws_url) as ws:
        await ws.subscribe(ADDED, {"c": conversation["id"]})
        assert await refused(ws) == "UNAUTHENTICATED"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {owner}") as ws:
        await ws.subscribe(ADDED, {})
        assert await refused(ws) == "BAD_USER_INPUT"
        await ws.subscribe(ADDED, {"c": conversation["id"]})
        await subscribers(server, f"chat:conversation:{conversation['id']}")
        await post(server, owner, conversationId=conversation["id"], text="note to self")
        received = (await ws.next_data())["chatMessageAdded"]
        assert received["text"] == "note to self"
        assert received["conversation"] == {"id": conversation["id"]}


async def test_a_removed_member_stops_receiving(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    listener, listener_id = await new_member(server, bot, guild["id"])
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {listener}") as ws:
        await ws.subscribe(ADDED, {"g": guild["id"]})
        await subscribers(server, f"chat:guild:{guild['id']}")
        remove = "mutation($g: ID!, $u: ID!) { removeGuildMember(guildId: $g, userId: $u) }"
        await server.data(remove, {"g": guild["id"], "u": listener_id}, token=bot)
        assert await refused(ws) == "FORBIDDEN"
    assert await user_id_of(server, listener) == listener_id


async def test_a_guild_member_cannot_reach_a_private_conversation_through_a_message(server: LiveServer) -> None:
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    owner, _ = await new_member(server, bot, guild["id"])
    member, _ = await new_member(server, bot, guild["id"])
    conversation = (await server.data(CREATE, {"title": "private"}, token=owner))["createConversation"]
    await post(server, owner, conversationId=conversation["id"], text="secret, not in the guild")
    await post(server, owner, conversationId=conversation["id"], guildId=guild["id"], text="shared with the guild")
    read = """query($id: ID!) { guild(id: $id) { chatMessages { nodes { text conversation { id } } } } }"""
    nodes = (await server.data(read, {"id": guild["id"]}, token=member))["guild"]["chatMessages"]["nodes"]
    assert nodes == [{"text": "shared with the guild", "conversation": None}]
    mine = (await server.data(read, {"id": guild["id"]}, token=owner))["guild"]["chatMessages"]["nodes"]
    assert mine == [{"text": "shared with the guild", "conversation": {"id": conversation["id"]}}]
