"""vendorsNear against a brute-force haversine, the index it uses, and the live map."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql

from app.vendors import geo, models
from app.vendors.service import vendors
from tests.support import GraphQLWS, LiveServer, new_user

NEAR = """query($lat: Float!, $long: Float!, $r: Float!, $open: Boolean, $first: Int) {
  vendorsNear(lat: $lat, long: $long, radiusKm: $r, openOnly: $open, first: $first) { distanceKm vendor { id } }
}"""


@pytest.fixture(scope="module")
async def field(server: LiveServer) -> dict[str, Any]:
    """5,000 vendors at random, a quarter of them within 3 degrees of the antimeridian and some near
    each pole, inserted in one statement; the test's own rows are told apart by their name."""
    token = await new_user(server)
    me = await server.data("{ me { id } }", token=token)
    owner = uuid.UUID(me["me"]["id"])
    tag = f"near-{uuid.uuid4().hex[:8]}"
    rng = random.Random(20261122)
    rows = []
    for index in range(5000):
        kind = index % 4
        lat = rng.uniform(-89.9, 89.9) if kind != 2 else rng.choice((-1, 1)) * rng.uniform(84, 90)
        long = rng.uniform(-180, 180) if kind != 1 else rng.choice((rng.uniform(177, 180), rng.uniform(-180, -177)))
        rows.append({"user_id": owner, "name": tag, "lat": lat, "long": long, "open": rng.random() < 0.7})
    async with server.deps.db.session() as session:
        await session.execute(insert(models.Vendor), rows)
        await session.commit()
        found = (
            await session.execute(text("SELECT id, lat, long, open FROM vendors WHERE name = :n"), {"n": tag})
        ).all()
    return {"token": token, "vendors": [(str(r[0]), r[1], r[2], r[3]) for r in found], "tag": tag}


def brute_force(
    points: list[tuple[str, float, float, bool]], lat: float, long: float, radius: float, open_only: bool
) -> list[str]:
    near = [
        (geo.haversine_km(lat, long, p_lat, p_long), vid)
        for vid, p_lat, p_long, is_open in points
        if (is_open or not open_only)
    ]
    return [vid for distance, vid in sorted(near) if distance <= radius]


CASES = [
    (0.0, 179.5, 400.0),  # across the antimeridian
    (10.0, -179.9, 800.0),
    (89.5, 20.0, 300.0),  # a pole inside the circle
    (-88.0, -100.0, 500.0),
    (45.0, 7.0, 1500.0),
    (-33.9, 151.2, 2500.0),
    (60.0, 180.0, 1200.0),
]


@pytest.mark.parametrize(("lat", "long", "radius"), CASES)
async def test_vendors_near_matches_brute_force_haversine(
    server: LiveServer, field: dict[str, Any], lat: float, long: float, radius: float
) -> None:
    ours = {vid for vid, *_ in field["vendors"]}
    for open_only in (False, True):
        expected = brute_force(field["vendors"], lat, long, radius, open_only)
        assert expected, "every case should find something"
        data = await server.data(NEAR, {"lat": lat, "long": long, "r": radius, "open": open_only, "first": 500})
        got = [row["vendor"]["id"] for row in data["vendorsNear"] if row["vendor"]["id"] in ours]
        # Other tests' vendors may be near too: compare this field's vendors, in order.
        assert got == expected[: len(got)] and (len(got) == len(expected) or len(data["vendorsNear"]) == 500)
        distances = [row["distanceKm"] for row in data["vendorsNear"]]
        assert distances == sorted(distances)


async def test_vendors_near_uses_the_location_index(server: LiveServer) -> None:
    query = vendors.near_query(lat=0.0, long=179.5, radius_km=300.0, open_only=False, limit=50)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with server.deps.db.session() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.execute(text("EXPLAIN " + sql))).scalars().all())
    assert "ix_vendors_location" in plan, plan


async def test_bad_nearby_input(server: LiveServer) -> None:
    for variables in (
        {"lat": 91.0, "long": 0.0, "r": 10.0},
        {"lat": 0.0, "long": -181.0, "r": 10.0},
        {"lat": 0.0, "long": 0.0, "r": 0.0},
        {"lat": 0.0, "long": 0.0, "r": -5.0},
        {"lat": 0.0, "long": 0.0, "r": 10.0, "first": 100_000},
    ):
        assert await server.error_code(NEAR, variables) == "BAD_USER_INPUT", variables


MAP = """subscription($v: ID, $a: Float, $b: Float, $c: Float, $d: Float) {
  vendorLocationUpdated(vendorId: $v, minLat: $a, maxLat: $b, minLong: $c, maxLong: $d) { lat long vendor { id } }
}"""
RECORD = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id } }"


async def test_a_box_subscriber_gets_vendors_inside_and_not_outside(server: LiveServer) -> None:
    token = await new_user(server)
    create = "mutation($n: String!) { createVendor(input: {name: $n}) { id } }"
    inside = (await server.data(create, {"n": "inside"}, token=token))["createVendor"]["id"]
    outside = (await server.data(create, {"n": "outside"}, token=token))["createVendor"]["id"]
    # A box across the antimeridian: longitudes 170..180 and -180..-170.
    box = {"a": -10.0, "b": 10.0, "c": 170.0, "d": -170.0}
    async with GraphQLWS.connect(server.ws_url) as ws:
        await ws.subscribe(MAP, box)
        async with asyncio.timeout(10):
            while not server.deps.hub.subscribers("vendors:map"):
                await asyncio.sleep(0.005)
        await server.data(RECORD, {"v": outside, "lat": 0.0, "long": 0.0}, token=token)
        await server.data(RECORD, {"v": inside, "lat": 5.0, "long": -175.0}, token=token)
        await server.data(RECORD, {"v": outside, "lat": 20.0, "long": 175.0}, token=token)
        await server.data(RECORD, {"v": inside, "lat": -5.0, "long": 175.0}, token=token)
        first = (await ws.next_data())["vendorLocationUpdated"]
        second = (await ws.next_data())["vendorLocationUpdated"]
        assert [(first["lat"], first["long"]), (second["lat"], second["long"])] == [(5.0, -175.0), (-5.0, 175.0)]
        assert first["vendor"]["id"] == inside == second["vendor"]["id"]
        # Nothing from outside was queued behind them: a marker from inside comes next.
        await server.data(RECORD, {"v": outside, "lat": -50.0, "long": 179.0}, token=token)
        await server.data(RECORD, {"v": inside, "lat": 1.0, "long": 171.0}, token=token)
        assert (await ws.next_data())["vendorLocationUpdated"]["long"] == 171.0


async def test_a_vendor_subscriber_gets_that_vendor_only_and_bad_boxes_are_refused(server: LiveServer) -> None:
    token = await new_user(server)
    create = "mutation($n: String!) { createVendor(input: {name: $n}) { id } }"
    mine = (await server.data(create, {"n": "mine"}, token=token))["createVendor"]["id"]
    other = (await server.data(create, {"n": "other"}, token=token))["createVendor"]["id"]
    async with GraphQLWS.connect(server.ws_url) as ws:
        for bad in (
            {},
            {"a": 0.0, "b": 1.0},
            {"a": 5.0, "b": 1.0, "c": 0.0, "d": 1.0},
            {"a": 0.0, "b": 100.0, "c": 0.0, "d": 1.0},
            {"v": mine, "a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0},
        ):
            await ws.subscribe(MAP, bad)
            message = await ws.receive()
            errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", bad
            if message["type"] == "next":
                assert (await ws.receive())["type"] == "complete"
        await ws.subscribe(MAP, {"v": mine})
        async with asyncio.timeout(10):
            while not server.deps.hub.subscribers(f"vendor:{mine}"):
                await asyncio.sleep(0.005)
        await server.data(RECORD, {"v": other, "lat": 1.0, "long": 1.0}, token=token)
        await server.data(RECORD, {"v": mine, "lat": 2.0, "long": 2.0}, token=token)
        got = (await ws.next_data())["vendorLocationUpdated"]
        assert (got["lat"], got["vendor"]["id"]) == (2.0, mine)
    # Live positions are public, like a vendor's current position (that anonymous socket heard
    # them); the stored trail is not: a stranger cannot page through it.
    stranger = await new_user(server)
    trail = "query($id: ID!) { vendor(id: $id) { lat locations { totalCount nodes { lat } } } }"
    hidden = {"vendor": {"lat": 2.0, "locations": {"totalCount": 0, "nodes": []}}}
    assert await server.data(trail, {"id": mine}, token=stranger) == hidden
    assert await server.data(trail, {"id": mine}) == hidden
    owned = await server.data(trail, {"id": mine}, token=token)
    assert owned["vendor"]["locations"] == {"totalCount": 1, "nodes": [{"lat": 2.0}]}
