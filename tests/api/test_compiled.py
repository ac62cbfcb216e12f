"""Compiled reads answer byte for byte as the resolvers do (issue 16).

Two real servers on one database: the shared one (compiled reads on) and one with
`LODGE_COMPILED_READS=false`. Each request goes to both and the raw response bodies must be equal
(request ids aside). Each case also says how the compiled server ran its root field, read from
`lodge_compiled_roots_total`, so a case cannot pass by quietly falling back to the resolvers.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.accounts import models as accounts
from app.settings import Settings
from app.vendors import models
from tests.api.compiled_support import callers, compare, walk
from tests.support import LiveServer, counted, live_server, new_admin

# Names that exercise every escape orjson and to_json must agree on.
NAMES = ['Quote "q" and \\ back', "tab\tnew\nline\x01\x1f", "café é ü", "sep\u2028\u2029", "astral 🍕𝄞", "", "  "]
LATS = [40.0, -0.0, 1e-05, 1e-07, 12.345678901234567, -89.99999999999999, 0.1, 89.5, None]
LONGS = [179.5, -0.0, 1e-07, -180.0, 0.30000000000000004, 100.0, -1e-05, 2.5e-06]
BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class World:
    """A fixed set of rows and the callers who look at them."""

    def __init__(self) -> None:
        self.viewers: dict[str, dict[str, str]] = {}
        self.owner = ""
        self.other_owner = ""
        self.vendors: list[str] = []
        self.deleted_owner = ""


@pytest.fixture(scope="module")
async def world(server: LiveServer) -> World:
    w = World()
    people = await callers(server, ("vendors:write",))
    w.viewers = people.headers
    w.owner, w.other_owner = str(people.ids["owner"]), str(people.ids["other"])
    async with server.deps.db.session() as session:
        deleted = accounts.User(email=f"gone-{uuid.uuid4().hex[:8]}@example.com", deleted_at=BASE)
        session.add(deleted)
        await session.flush()
        w.deleted_owner = str(deleted.id)
        for i in range(23):
            lat = LATS[i % len(LATS)]
            owner = w.owner if i % 3 else w.other_owner
            vendor = models.Vendor(
                user_id=uuid.UUID(owner),
                name=NAMES[i % len(NAMES)] + f" #{i}",
                description=None if i % 2 else NAMES[(i + 1) % len(NAMES)],
                open=i % 4 != 0,
                lat=lat,
                long=None if lat is None else LONGS[i % len(LONGS)],
                primary_image=None if i % 5 else "https://example.com/🍕.png",
                # Two vendors share an instant: the id breaks the tie in the order and the cursor.
                created_at=BASE + timedelta(minutes=i // 2 * 2, microseconds=0 if i % 3 else 123456),
                updated_at=BASE + timedelta(days=1, microseconds=i),
            )
            session.add(vendor)
            await session.flush()
            w.vendors.append(str(vendor.id))
            for j in range(i % 13):  # 0 to 12 positions: pages of exactly 10 and 11 among them
                session.add(
                    models.Location(
                        vendor_id=vendor.id,
                        lat=LATS[j % (len(LATS) - 1)] or 0.0,
                        long=LONGS[(j + 3) % len(LONGS)],
                        timestamp=BASE + timedelta(seconds=j // 2, microseconds=j * 7 % 3),
                    )
                )
        for i in range(5):
            session.add(
                models.BillingSubscription(
                    user_id=uuid.UUID(w.owner if i % 2 else w.other_owner),
                    provider=NAMES[i],
                    product_id=f"prod_{i}",
                    status=("active", "cancelled", "expired")[i % 3],
                    start_date=BASE + timedelta(days=i, microseconds=i * 10),
                    end_date=None if i % 2 else BASE + timedelta(days=40),
                    created_at=BASE + timedelta(hours=i // 2),
                )
            )
        metadatas: tuple[Any, ...] = ({"a": [1, 2.5, {"b": None}]}, None, {}, [], "é", 1e20)
        for i, metadata in enumerate(metadatas):
            session.add(
                models.Integration(
                    service=f"svc{i % 2}", external_id=f"ext-{i}", internal_id=NAMES[i], metadata_=metadata
                )
            )
        await session.commit()
    return w


VENDOR_SCALARS = "id name description phone email website open primaryImage lat long createdAt updatedAt"
LOCATION_SCALARS = "id lat long timestamp"


def selections() -> list[str]:
    """Generated selections of Vendor under `vendors`: each field alone, all of them, aliases,
    fragments, __typename, every connection part."""
    fields = VENDOR_SCALARS.split()
    out = [f"nodes {{ {name} }}" for name in fields]
    out += [
        f"nodes {{ {VENDOR_SCALARS} __typename }}",
        "nodes { a: id b: name a2: id } totalCount __typename",
        "nodes { ...V } fragment_marker",
        "nodes { ... on Vendor { id name } name }",
        "edges { cursor node { id } __typename } pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }",
        "nodes { id } edges { node { name } } totalCount pageInfo { endCursor }",
        "pageInfo { startCursor } totalCount",
        "nodes { owner { id name username globalName avatarUrl isActive createdAt updatedAt __typename } }",
        f"nodes {{ id locations(first: 10) {{ nodes {{ {LOCATION_SCALARS} }} totalCount "
        "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } } } }",
        "nodes { name locations(first: 3) { nodes { id vendor { id name owner { id } } } } }",
        "nodes { locations { totalCount } }",
        "nodes { l: locations(first: 0) { pageInfo { hasNextPage hasPreviousPage } nodes { id } } }",
        "nodes { locations(first: 11) { pageInfo { hasNextPage } nodes { timestamp } } }",
    ]
    return out


def _document(selection: str, arguments: str = "first: 50") -> str:
    if "fragment_marker" in selection:
        selection = selection.replace(" fragment_marker", "")
        return f"{{ vendors({arguments}) {{ {selection} }} }} fragment V on Vendor {{ id name lat }}"
    return f"{{ vendors({arguments}) {{ {selection} }} }}"


async def test_generated_selections_compile_and_match(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    for viewer in ("owner", "other", "writer", "anonymous", "apikey"):
        for selection in selections():
            query = _document(selection, f'ownerId: "{world.owner}", first: 50')
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == "compiled", (viewer, query)
            query = _document(selection, "first: 5")  # the whole table, as it is
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == "compiled", (viewer, query)


async def test_every_page_of_a_walk_matches(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    query = (
        "query($o: ID, $after: String, $n: Int, $since: DateTime) { vendors(ownerId: $o, first: $n, after: $after) {"
        " totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
        " edges { cursor node { id createdAt locations(first: 4, since: $since) { totalCount nodes { id timestamp } } } } } }"
    )
    for owner in (world.owner, world.other_owner):
        for size in (1, 4, 7):
            for since in (None, (BASE + timedelta(seconds=2)).isoformat()):
                variables = {"o": owner, "n": size, "since": since}
                runs = await walk(server, resolver_server, query, variables, world.viewers["owner"], "vendors", "after")
                assert set(runs) == {"compiled"}
                assert len(runs) > 1 or size == 7


async def test_filters_and_lookups_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    listing = "query($s: String, $o: Boolean, $owner: ID) { vendors(search: $s, open: $o, ownerId: $owner, first: 50) { totalCount nodes { id name open } } }"
    for variables in (
        {"s": "café"},
        {"s": "#1"},
        {"s": "%"},
        {"s": "_"},
        {"s": "\\"},
        {"s": ""},
        {"o": True, "owner": world.owner},
        {"o": False},
        {"s": "#", "o": True, "owner": world.other_owner},
    ):
        _, ran = await compare(server, resolver_server, listing, variables, world.viewers["anonymous"])
        assert ran == "compiled", variables
    lookup = (
        "query($id: ID!, $since: DateTime, $after: String) { vendor(id: $id) { id name description open lat long"
        " owner { id name } locations(since: $since, first: 50, after: $after) { totalCount nodes { lat long timestamp }"
        " pageInfo { hasNextPage endCursor } } } }"
    )
    for viewer in ("owner", "other", "writer", "admin", "anonymous"):
        for vendor in world.vendors[:6]:
            _, ran = await compare(server, resolver_server, lookup, {"id": vendor}, world.viewers[viewer])
            assert ran == "compiled"
        _, ran = await compare(server, resolver_server, lookup, {"id": str(uuid.uuid4())}, world.viewers[viewer])
        assert ran == "compiled"  # unknown: null, no error


async def test_refusals_bail_to_the_resolvers_with_the_same_errors(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    vendor = world.vendors[4]
    history = (
        "query($id: ID!, $a: String, $n: Int) { vendor(id: $id) { locations(first: $n, after: $a) { nodes { id } } } }"
    )
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("{ vendors(first: 501) { nodes { id } } }", {}, "anonymous", "bail_before"),
        ("{ vendors(first: -1) { nodes { id } } }", {}, "anonymous", "bail_before"),
        ('{ vendors(after: "bm9wZQ") { nodes { id } } }', {}, "anonymous", "bail_before"),
        ('{ vendors(ownerId: "nope") { nodes { id } } }', {}, "anonymous", "bail_before"),
        (f'{{ vendors(ownerId: "{uuid.uuid4()}") {{ nodes {{ id }} }} }}', {}, "anonymous", "bail_after"),
        (f'{{ vendors(ownerId: "{world.deleted_owner}") {{ nodes {{ id }} }} }}', {}, "anonymous", "bail_after"),
        ('{ vendor(id: "not-a-uuid") { id } }', {}, "anonymous", "bail_before"),
        (history, {"id": vendor, "n": 501}, "owner", "bail_before"),
        (history, {"id": vendor, "a": "garbage"}, "owner", "bail_before"),
        (history, {"id": vendor, "a": "garbage"}, "other", "bail_before"),  # no error there: hidden
        (history, {"id": vendor}, "badtoken", "bail_before"),  # the viewer is asked: UNAUTHENTICATED
        ("{ vendors(first: 2) { nodes { id name } } }", {}, "badtoken", "compiled"),  # public: never asks
    ]
    for query, variables, viewer, expected in cases:
        _, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
        assert ran == expected, (query, variables, viewer, ran)


async def test_what_does_not_compile_keeps_the_resolvers(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    query = "{ vendorsNear(lat: 1, long: 1, radiusKm: 10) { distanceKm } }"  # a root not declared
    _, ran = await compare(server, resolver_server, query, {"b": True}, world.viewers["owner"])
    assert ran is None, query


HYBRID = (
    "query($o: ID) { vendors(ownerId: $o, first: 10) { totalCount nodes { id name"
    " locations(first: 3) { nodes { id timestamp } } owner { name guilds { totalCount nodes { id } } } } } }"
)


async def test_a_field_that_needs_python_leaves_the_rest_compiled(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    """User.guilds has a resolver: it runs in Python on each owner built from the statement's row,
    and everything else comes from the one statement (a hybrid answer), with identical bytes."""
    for viewer in ("owner", "other", "anonymous", "writer"):
        for variables in ({"o": world.owner}, {}):
            _, ran = await compare(server, resolver_server, HYBRID, variables, world.viewers[viewer])
            assert ran == "hybrid", (viewer, variables, ran)
    token = world.viewers["owner"]["authorization"].removeprefix("Bearer ")
    for warm in (server, resolver_server):  # the caller is known from here on
        await warm.data(HYBRID, {"o": world.owner}, token=token)
    data, hybrid = await counted(server, HYBRID, {"o": world.owner}, token)
    guilds_only = (
        "query($o: ID) { vendors(ownerId: $o, first: 10) { nodes { owner { guilds { totalCount nodes { id } } } } } }"
    )
    _, python = await counted(resolver_server, guilds_only, {"o": world.owner}, token)
    _, resolvers = await counted(resolver_server, HYBRID, {"o": world.owner}, token)
    assert len(data["vendors"]["nodes"]) == 10
    # At most the statement plus what the guilds resolver reads (the resolver path's total for
    # guilds alone, less its reads of vendors and owners, which the statement replaced).
    assert hybrid <= 1 + python - 2, (hybrid, python, resolvers)
    assert hybrid < resolvers
    _, plain = await counted(
        server, HYBRID.replace(" guilds { totalCount nodes { id } }", ""), {"o": world.owner}, token
    )
    assert plain == 1


async def test_one_statement_for_the_nested_history(server: LiveServer, world: World) -> None:
    token = world.viewers["owner"]["authorization"].removeprefix("Bearer ")
    query = (
        "query($o: ID) { vendors(ownerId: $o, first: 100) { nodes { id name lat long owner { name }"
        " locations(first: 10) { totalCount nodes { id lat long timestamp vendor { name } } } } } }"
    )
    await server.data(query, {"o": world.owner}, token=token)  # the caller is known from here on
    data, statements = await counted(server, query, {"o": world.owner}, token)
    assert len(data["vendors"]["nodes"]) == 15
    assert statements == 1


async def test_operations_with_several_roots(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    owner = world.viewers["owner"]
    vendor = world.vendors[7]
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        # Every root compiled: written without graphql-core, in the document's order.
        (f'{{ b: vendors(first: 2) {{ nodes {{ id }} }} a: vendor(id: "{vendor}") {{ name }} }}', {}, "compiled"),
        # One compiled root beside a resolver: graphql-core runs, the compiled one is spliced in.
        ("{ me { id name } vendors(first: 3) { totalCount nodes { name } } }", {}, "compiled"),
        # A variable that does not coerce: graphql-core's own error.
        ("query($n: Int) { vendors(first: $n) { nodes { id } } }", {"n": "ten"}, None),
        # One root bails: the resolvers answer all of it.
        ('{ a: vendors(first: 1) { nodes { id } } b: vendor(id: "bad") { id } }', {}, "compiled+bail_before"),
    ]
    for query, variables, expected in cases:
        _, ran = await compare(server, resolver_server, query, variables, owner)
        assert ran == expected, (query, ran)


ROLES = "roles { id name description permissions __typename }"
USER_FIELDS = (
    "id name username globalName avatarUrl isActive createdAt updatedAt "
    "email discordId clerkId firstName lastName emailVerifiedAt lastLoginAt"
)


async def _people(server: LiveServer, marker: str) -> list[str]:
    """Users with every column set to something awkward (and some null), named with `marker`."""
    ids = []
    async with server.deps.db.session() as session:
        for i in range(7):
            person = accounts.User(
                email=f"{marker}-{i}@example.com",
                name=f"{marker} {NAMES[i % len(NAMES)]}",
                first_name=None if i % 2 else NAMES[(i + 2) % len(NAMES)],
                last_name=NAMES[(i + 3) % len(NAMES)],
                username=None if i % 3 == 0 else f"{marker}_{i}",
                global_name=NAMES[(i + 4) % len(NAMES)],
                discord_id=f"{marker}{i}" if i % 2 else None,
                clerk_id=None if i % 2 else f"user_{marker}{i}",
                avatar_url=None if i % 4 else "https://cdn.example.com/a\\b.png",
                is_active=i != 5,
                email_verified_at=None if i % 3 else BASE + timedelta(microseconds=i),
                last_login_at=BASE + timedelta(days=i) if i % 2 else None,
                created_at=BASE + timedelta(seconds=i // 2),
                deleted_at=BASE if i == 6 else None,
            )
            session.add(person)
            await session.flush()
            ids.append(str(person.id))
        for i, permissions in enumerate((["vendors:write", 'é"q'], [], ["users:admin"])):
            role = accounts.Role(
                name=f"{marker} role {2 - i}", description=None if i else "d\n", permissions=permissions
            )
            session.add(role)
            await session.flush()
            for person_id in ids[: 3 - i]:
                session.add(accounts.UserRole(user_id=uuid.UUID(person_id), role_id=role.id))
        await session.commit()
    return ids


async def test_accounts_compile_and_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    marker = "zq" + uuid.uuid4().hex[:6]
    people = await _people(server, marker)
    viewers = ("owner", "other", "admin", "anonymous", "apikey", "badtoken")
    for viewer in viewers:
        for selection in [*USER_FIELDS.split(), USER_FIELDS + " __typename", "a: id b: email id", ROLES]:
            _, ran = await compare(server, resolver_server, f"{{ me {{ {selection} }} }}", None, world.viewers[viewer])
            assert ran == ("bail_before" if viewer == "badtoken" else "compiled"), (viewer, selection, ran)
        lookup = f"query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} {ROLES} }} }}"
        targets = [world.owner, people[0], people[1], people[5], people[6], str(uuid.uuid4()), "nope"]
        for target in targets:
            _, ran = await compare(server, resolver_server, lookup, {"id": target}, world.viewers[viewer])
            assert ran is not None
    listing = (
        "query($s: String, $n: Int, $a: String) { users(search: $s, first: $n, after: $a) { totalCount"
        f" pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} edges {{ cursor node {{ {USER_FIELDS} }} }} }} }}"
    )
    for size in (1, 2, 5):
        runs = await walk(server, resolver_server, listing, {"s": marker, "n": size}, world.viewers["admin"], "users")
        assert set(runs) == {"compiled"}
    for search in (marker, "", "%", None, f"{marker}_3"):
        _, ran = await compare(server, resolver_server, listing, {"s": search, "n": 3}, world.viewers["admin"])
        assert ran == "compiled"
    for viewer in ("owner", "anonymous", "apikey"):  # users:admin only: the resolvers' error
        _, ran = await compare(server, resolver_server, listing, {"s": marker}, world.viewers[viewer])
        assert ran == "bail_after"
        _, ran = await compare(
            server, resolver_server, "{ roles { id name permissions } }", None, world.viewers[viewer]
        )
        assert ran == "bail_after"
    listing = f"query($s: String) {{ users(search: $s, first: 10) {{ nodes {{ name {ROLES} }} }} }}"
    for viewer in ("admin", "writer"):
        _, ran = await compare(server, resolver_server, listing, {"s": marker}, world.viewers[viewer])
        assert ran == ("compiled" if viewer == "admin" else "bail_after")
    _, ran = await compare(server, resolver_server, "{ roles { name permissions } }", None, world.viewers["admin"])
    assert ran == "compiled"


async def test_me_is_one_statement(server: LiveServer, world: World) -> None:
    token = world.viewers["owner"]["authorization"].removeprefix("Bearer ")
    query = "{ me { id name email createdAt } }"
    await server.data(query, token=token)
    data, statements = await counted(server, query, {}, token)
    assert data["me"]["id"] == world.owner
    assert statements == 1


async def test_vendor_relations_and_lookups(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    subscriptions = (
        "billingSubscriptions { id provider productId status startDate endDate createdAt updatedAt user { id } }"
    )
    vendors = "vendors(first: 3) { totalCount nodes { id name } pageInfo { hasNextPage endCursor } }"
    for viewer in ("owner", "other", "writer", "admin", "anonymous", "apikey"):
        headers = world.viewers[viewer]
        _, ran = await compare(server, resolver_server, f"{{ me {{ id {vendors} {subscriptions} }} }}", None, headers)
        assert ran == "compiled", viewer
        query = f"{{ vendors(first: 30) {{ nodes {{ owner {{ {subscriptions} {vendors} }} }} }} }}"
        _, ran = await compare(server, resolver_server, query, None, headers)
        assert ran == "compiled", viewer
        lookup = "query($s: String!, $e: String!) { integration(service: $s, externalId: $e) { id service externalId internalId metadata createdAt updatedAt } }"
        for key in (
            ("svc0", "ext-0"),
            ("svc1", "ext-1"),
            ("svc0", "ext-2"),
            ("svc1", "ext-3"),
            ("svc0", "ext-4"),
            ("svc1", "ext-5"),
            ("svc0", "nope"),
        ):
            _, ran = await compare(server, resolver_server, lookup, {"s": key[0], "e": key[1]}, headers)
            assert ran == ("compiled" if viewer in ("writer", "admin") else "bail_after"), (viewer, key)


async def test_plans_are_logged_once_each(
    settings: Settings, database_url: str, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    query = "query($n: Int) { vendors(first: $n) { nodes { id name } } }"
    async with live_server(settings.model_copy(update={"log_plans": True}), database_url) as logging_server:
        with caplog.at_level(logging.INFO, logger="lodge.plans"):
            for size in (2, 2, 3):
                await logging_server.data(query, {"n": size})
    logged = [r.getMessage() for r in caplog.records if r.name == "lodge.plans"]
    assert len(logged) == 2  # one per distinct statement: sizes 2 and 3
    assert all(m.startswith("Query.vendors: SELECT ") and "FROM vendors" in m for m in logged)
    assert "LIMIT 2)" in logged[0] and "LIMIT 3)" in logged[1]


async def test_uncommon_page_sizes_are_parameters(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    """Sizes outside the common ones go as parameters (a client cycling through sizes must not fill
    the statement caches), with the same answers, selected parts or not."""
    for size in (13, 77, 499):
        for selection in (
            "totalCount",
            "nodes { id } pageInfo { hasNextPage endCursor }",
            "pageInfo { hasPreviousPage }",
        ):
            query = f"{{ vendors(first: {size}) {{ {selection} }} }}"
            _, ran = await compare(server, resolver_server, query, None, world.viewers["owner"])
            assert ran == "compiled", (size, selection, ran)
        nested = f"{{ vendors(first: 3) {{ nodes {{ locations(first: {size}) {{ pageInfo {{ hasNextPage }} nodes {{ id }} }} }} }} }}"
        _, ran = await compare(server, resolver_server, nested, None, world.viewers["owner"])
        assert ran == "compiled", (size, ran)


async def test_an_owners_filter_reads_through_the_index(server: LiveServer, world: World) -> None:
    """A root filtered by its owner (`projects`, `files`, `conversations`) must read the owner's
    rows through an index, not scan the table: the rule is written so PostgreSQL can use one."""
    from graphql.execution.values import VariableValues

    from app.api.compiled.planner import Caller

    pipeline = server.app.state.graphql.pipeline
    for query, table in (
        ("{ projects(first: 10) { totalCount nodes { id } } }", "projects"),
        ("{ files(first: 10) { totalCount nodes { id } } }", "files"),
    ):
        prepared = pipeline.prepare(query, None)
        assert prepared is not None and prepared.compiled is not None
        (plan,) = prepared.compiled.roots.values()
        sql, params = plan.render(VariableValues({}, {}), Caller(user_id=uuid.UUID(world.owner)))
        async with server.deps.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.transaction():
                await driver.execute("SET LOCAL enable_seqscan = off")  # only an index path avoids the scan
                lines = [row[0] for row in await driver.fetch("EXPLAIN " + sql, *params)]
        assert not any(f"Seq Scan on {table}" in line for line in lines), "\n".join(lines)


async def test_billing_subscriptions_are_the_callers_or_a_billing_services(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    billing_token, _ = await new_admin(server, ("billing:write",))
    viewers = {**world.viewers, "billing": {"authorization": f"Bearer {billing_token}"}}
    query = (
        "query($s: String, $u: ID, $n: Int, $a: String) { billingSubscriptions(status: $s, userId: $u, first: $n, after: $a)"
        " { totalCount pageInfo { hasNextPage endCursor } nodes { id provider productId status startDate endDate user { id } } } }"
    )
    for viewer, headers in viewers.items():
        for user in (None, world.owner, world.other_owner, world.deleted_owner, str(uuid.uuid4()), "nope", ""):
            for status in (None, "active", "ACTIVE", "", "cancelled"):
                _, ran = await compare(server, resolver_server, query, {"s": status, "u": user, "n": 2}, headers)
                assert ran is not None, (viewer, user, status)
                if viewer in ("anonymous", "apikey", "badtoken") or user in ("nope", ""):
                    assert ran == "bail_before", (viewer, user, ran)
                elif (
                    user is None
                    or (viewer, user) in (("owner", world.owner), ("other", world.other_owner))
                    or (viewer in ("billing", "admin") and user in (world.owner, world.other_owner))
                ):
                    assert ran == "compiled", (viewer, user, status, ran)
                else:
                    assert ran == "bail_after", (viewer, user, status, ran)
    # Every page of the owner's, as the owner.
    runs = await walk(server, resolver_server, query, {"n": 1}, viewers["owner"], "billingSubscriptions")
    assert set(runs) == {"compiled"}


async def test_skip_and_include_are_planned_per_value(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    """@skip/@include on variables: one plan per combination of their values, each compiled and
    equal to the resolvers' answer; a literal condition needs no variable; @defer stays out."""
    query = (
        "query($a: Boolean!, $b: Boolean = false, $o: ID) { vendors(ownerId: $o, first: 3) { totalCount @skip(if: $a)"
        " nodes { id name @include(if: $a) ...F @include(if: $b) owner @skip(if: $b) { name } } } }"
        " fragment F on Vendor { lat long locations(first: 2) { nodes { timestamp } } }"
    )
    for a in (True, False):
        for b in (True, False, None):
            variables = {"a": a, "o": world.owner, **({"b": b} if b is not None else {})}
            for viewer in ("owner", "other", "anonymous"):
                _, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
                assert ran == "compiled", (a, b, viewer, ran)
    literal = "{ vendors(first: 2) { nodes { id @include(if: true) name @skip(if: true) } } }"
    _, ran = await compare(server, resolver_server, literal, None, world.viewers["owner"])
    assert ran == "compiled"
    _, ran = await compare(
        server,
        resolver_server,
        "query($a: Boolean!) { vendors(first: 1) { nodes { id @include(if: $a) } } }",
        {},
        world.viewers["owner"],
    )
    assert ran is None  # a missing variable: graphql-core's own error
