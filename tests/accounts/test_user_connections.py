"""A user's guilds, workflows, vendors and billing subscriptions, and who may see which."""

from __future__ import annotations

import uuid

from tests.support import LiveServer, new_admin, new_user

ME = "{ me { id } }"
CONNECTIONS = """{ guilds { totalCount nodes { name } } workflows { totalCount nodes { name } }
  vendors { totalCount nodes { name } } billingSubscriptions { productId } }"""


async def test_a_users_connections_show_what_the_caller_may_see(server: LiveServer) -> None:
    alice, bob = await new_user(server), await new_user(server)
    staff, _ = await new_admin(server, ("guilds:write",))
    alice_id = (await server.data(ME, token=alice))["me"]["id"]
    bob_id = (await server.data(ME, token=bob))["me"]["id"]
    guild = "mutation($d: String!, $n: String!) { upsertGuild(input: {discordId: $d, name: $n}) { id } }"
    member = "mutation($g: ID!, $u: ID!) { addGuildMember(guildId: $g, userId: $u) { roles } }"
    shared = (await server.data(guild, {"d": uuid.uuid4().hex, "n": "shared"}, token=staff))["upsertGuild"]["id"]
    alone = (await server.data(guild, {"d": uuid.uuid4().hex, "n": "alone"}, token=staff))["upsertGuild"]["id"]
    for guild_id, user_id in ((shared, alice_id), (shared, bob_id), (alone, alice_id)):
        await server.data(member, {"g": guild_id, "u": user_id}, token=staff)
    workflow = "mutation($n: String!, $p: Boolean!) { createWorkflow(input: {name: $n, isPublic: $p}) { id } }"
    await server.data(workflow, {"n": "private", "p": False}, token=alice)
    await server.data(workflow, {"n": "public", "p": True}, token=alice)
    vendor = 'mutation { createVendor(input: {name: "Tacos"}) { id } }'
    vendor_id = (await server.data(vendor, token=alice))["createVendor"]["id"]
    billing = """mutation($u: ID!) { createBillingSubscription(input: {provider: "stripe", productId: "pro",
      startDate: "2026-11-01T00:00:00Z", userId: $u}) { id } }"""
    billing_service, _ = await new_admin(server, ("billing:write",))
    await server.data(billing, {"u": alice_id}, token=billing_service)

    own = (await server.data("{ me " + CONNECTIONS + " }", token=alice))["me"]
    assert own["guilds"] == {"totalCount": 2, "nodes": [{"name": "alone"}, {"name": "shared"}]}
    assert own["workflows"]["totalCount"] == 2
    assert own["vendors"] == {"totalCount": 1, "nodes": [{"name": "Tacos"}]}
    assert own["billingSubscriptions"] == [{"productId": "pro"}]

    # Bob reaches Alice through her vendor: her vendors are public, her public workflow is, the
    # guilds they share are; her private workflow, her other guild and her billing are not.
    through = "query($v: ID!) { vendor(id: $v) { owner " + CONNECTIONS + " } }"
    seen = (await server.data(through, {"v": vendor_id}, token=bob))["vendor"]["owner"]
    assert seen["guilds"] == {"totalCount": 1, "nodes": [{"name": "shared"}]}
    assert seen["workflows"] == {"totalCount": 1, "nodes": [{"name": "public"}]}
    assert seen["vendors"]["totalCount"] == 1
    assert seen["billingSubscriptions"] == []
    # Staff of the communities see every guild of hers.
    staff_view = (await server.data(through, {"v": vendor_id}, token=staff))["vendor"]["owner"]
    assert staff_view["guilds"]["totalCount"] == 2
    # A billing service sees her subscriptions.
    service, _ = await new_admin(server, ("billing:write",))
    billed = (await server.data(through, {"v": vendor_id}, token=service))["vendor"]["owner"]
    assert billed["billingSubscriptions"] == [{"productId": "pro"}]
