"""A position is rendered once for every subscriber that may see the same thing (issue 9's rule):
a selection whose declared fields carry no visibility rule is shared across callers; one that
reaches a rule (a vendor's history) only among sockets of one credential."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.api.test_observability import scrape, value
from tests.support import GraphQLWS, LiveServer, new_user

FOLLOW = "subscription($v: ID!) { vendorLocationUpdated(vendorId: $v) { lat long timestamp vendor { id name owner { name } } } }"
# The history is its owner's: each caller sees their own rendering of it.
HISTORY = (
    "subscription($v: ID!) { vendorLocationUpdated(vendorId: $v) { lat vendor { name "
    "locations(first: 2) { totalCount nodes { lat } } } } }"
)
RECORD = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id } }"
RENDERS = "lodge_subscription_shared_renders_total"


async def _renders(
    server: LiveServer, document: str, tokens: list[str | None]
) -> tuple[int, int, list[dict[str, Any]]]:
    owner = await new_user(server)
    vendor = (await server.data('mutation { createVendor(input: {name: "cart"}) { id } }', token=owner))[
        "createVendor"
    ]["id"]
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for token in tokens:
            authorization = f"Bearer {owner if token == 'owner' else token}" if token else None
            ws = await stack.enter_async_context(GraphQLWS.connect(server.ws_url, authorization=authorization))
            await ws.subscribe(document, {"v": vendor})
            sockets.append(ws)
        async with asyncio.timeout(10):
            while len(server.deps.hub.subscribers(f"vendor:{vendor}")) < len(sockets):
                await asyncio.sleep(0.005)
        before = await scrape(server)
        await server.data(RECORD, {"v": vendor, "lat": 1.5, "long": 2.5}, token=owner)
        got = [(await ws.next_data())["vendorLocationUpdated"] for ws in sockets]
        after = await scrape(server)
    executed = value(after, RENDERS, outcome="executed") - value(before, RENDERS, outcome="executed")
    reused = value(after, RENDERS, outcome="reused") - value(before, RENDERS, outcome="reused")
    return int(executed), int(reused), got


async def test_a_public_selection_is_rendered_once_for_every_caller(server: LiveServer) -> None:
    others = [await new_user(server) for _ in range(3)]
    executed, reused, got = await _renders(server, FOLLOW, [None, "owner", *others])
    assert (executed, reused) == (1, 4)
    assert all(g == got[0] for g in got) and got[0]["lat"] == 1.5 and got[0]["vendor"]["name"] == "cart"


async def test_a_selection_reaching_a_rule_is_shared_only_within_one_credential(server: LiveServer) -> None:
    other = await new_user(server)
    executed, reused, got = await _renders(server, HISTORY, ["owner", "owner", other, None])
    assert (executed, reused) == (3, 1)
    owner_view, _, other_view, anonymous_view = (g["vendor"]["locations"] for g in got)
    assert owner_view["totalCount"] == 1 and owner_view["nodes"] == [{"lat": 1.5}]
    assert other_view == anonymous_view == {"totalCount": 0, "nodes": []}


async def test_events_reaching_other_tables_render_as_one_statement(
    server: LiveServer, resolver_server: LiveServer
) -> None:
    """A position's vendor (and its owner, and the vendor's history for its owner) is rendered by
    one compiled statement per shared rendering, with the same frames as the resolvers give."""
    from app.observability import metrics

    owner = await new_user(server)
    vendor = (await server.data('mutation { createVendor(input: {name: "cart \\"1\\" é"}) { id } }', token=owner))[
        "createVendor"
    ]["id"]
    compiled = metrics.COMPILED_ROOTS.labels("compiled")
    for document, token in ((FOLLOW, None), (HISTORY, owner), (HISTORY, None)):
        frames = []
        async with contextlib.AsyncExitStack() as stack:
            sockets = []
            for live in (server, resolver_server):
                authorization = f"Bearer {token}" if token else None
                ws = await stack.enter_async_context(GraphQLWS.connect(live.ws_url, authorization=authorization))
                await ws.subscribe(document, {"v": vendor})
                sockets.append(ws)
            async with asyncio.timeout(10):  # each server's own hub, fed by the shared broker
                while not all(live.deps.hub.subscribers(f"vendor:{vendor}") for live in (server, resolver_server)):
                    await asyncio.sleep(0.005)
            before = compiled._value.get()
            await server.data(RECORD, {"v": vendor, "lat": -0.0, "long": 1e-07}, token=owner)
            frames = [(await ws.next_data())["vendorLocationUpdated"] for ws in sockets]
            assert compiled._value.get() == before + 1  # the compiled server's one rendering
        assert frames[0] == frames[1], document
