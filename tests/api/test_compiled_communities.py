"""Compiled reads and the communities domain (issue 16): every query answers byte for byte as the
resolvers do, for every kind of caller.

No communities root compiles yet: who may read a guild and what hangs off it is membership of the
guild or `guilds:write` (`access.can_read`), which no `c.Rule` expresses; `guilds` pages by a
name cursor; `conversation(s)` read the caller's own rows, which a root cannot ask for yet (see
app/communities/resolvers.py). So every case here must keep the resolver path (outcome None), and
the suite guards that nothing compiles by accident. The types' declarations (app/communities/types.py)
are checked through roots registered for one test only, guarded by `guilds:write` alone: exact
for staff, a bail for everyone else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import DocumentNode, OperationDefinitionNode, OperationType, parse, print_ast

from app.accounts import models as accounts
from app.api.compiled import declare as c
from app.api.permissions import parse_id
from app.communities import models
from tests.api.compiled_support import compare
from tests.support import LiveServer, counted, new_admin, new_api_key, new_project, new_user

# Every escape orjson and to_json must agree on.
TEXTS = ['Quote "q" and \\ back', "tab\tnew\nline\x01\x1f", "café é ü", "sep\u2028\u2029", "astral 🍕𝄞", "", "  "]
FLOATS = [0.1, 1.0, 0.0, 0.30000000000000004, 1e-05, 0.999999999999999, 0.5]
VALUES = [-0.0, 1e-07, 1e16, 12.345678901234567, -1e-05, 2.5e-06, 100.0, 1234567.125]
SETTINGS: list[dict[str, Any]] = [
    {"nested": {"a": [1, 2.5, {"b": None}], 'é"\\': "q\u2028"}, "dec": 0.1, "big": 12345678901234567890, "neg": -0.0},
    {},
    {"empty": {}, "list": [], "exp": 1e-07, "t": True, "s": "🍕"},
]
BASE = datetime(2026, 4, 1, 9, 30, 0, tzinfo=UTC)
VIEWERS = ("anonymous", "member", "other", "stranger", "staff", "admin", "apikey", "badtoken")


class World:
    """A fixed set of rows and the callers who look at them."""

    def __init__(self) -> None:
        self.viewers: dict[str, dict[str, str]] = {}
        self.tokens: dict[str, str] = {}
        self.marker = "zc" + uuid.uuid4().hex[:8]
        self.guilds: list[str] = []  # 0: member's and other's, 1: member's, 2: nobody's
        self.discord_ids: list[str] = []
        self.analyses: list[str] = []  # in guild 0, then in guild 1
        self.conversations: list[str] = []  # member's, then other's
        self.bare_conversation = ""  # member's, no messages


async def _person(server: LiveServer) -> tuple[str, str]:
    token = await new_user(server)
    me = await server.data("{ me { id } }", token=token)
    return token, me["me"]["id"]


@pytest.fixture(scope="module")
async def world(server: LiveServer) -> World:
    w = World()
    member_token, member = await _person(server)
    other_token, other = await _person(server)
    stranger_token, _ = await _person(server)
    staff_token, _ = await new_admin(server, ("guilds:write",))
    admin_token, _ = await new_admin(server, ("*",))
    project = await new_project(server, member_token)
    _, secret = await new_api_key(server, member_token, project)
    w.tokens = {"member": member_token, "staff": staff_token}
    w.viewers = {
        "anonymous": {},
        "member": {"authorization": f"Bearer {member_token}"},
        "other": {"authorization": f"Bearer {other_token}"},
        "stranger": {"authorization": f"Bearer {stranger_token}"},
        "staff": {"authorization": f"Bearer {staff_token}"},
        "admin": {"authorization": f"Bearer {admin_token}"},
        "apikey": {"authorization": f"ApiKey {secret}"},
        "badtoken": {"authorization": "Bearer not-a-token"},
    }
    member_id, other_id = uuid.UUID(member), uuid.UUID(other)
    async with server.deps.db.session() as session:
        gone = accounts.User(email=f"{w.marker}-gone@example.com", name=TEXTS[0], deleted_at=BASE)
        session.add(gone)
        await session.flush()
        guilds = []
        for i, settings in enumerate(SETTINGS):
            guild = models.Guild(
                discord_id=f"{w.marker}{i}",
                name=f"{w.marker} {TEXTS[i * 2 % len(TEXTS)]}",
                settings=settings,
                created_at=BASE + timedelta(seconds=i, microseconds=0 if i % 2 else 123456),
                updated_at=BASE + timedelta(days=1, microseconds=i),
            )
            session.add(guild)
            await session.flush()
            guilds.append(guild)
            w.guilds.append(str(guild.id))
            w.discord_ids.append(guild.discord_id)
        memberships = [
            (guilds[0], member_id, ["owner", 'é"q\\', "sep\u2028"]),
            (guilds[0], other_id, []),
            (guilds[0], gone.id, ["admin"]),  # a deleted user: out of the member list
            (guilds[1], member_id, ["🍕"]),
        ]
        for i, (guild, user_id, roles) in enumerate(memberships):
            session.add(
                models.UserGuild(
                    guild_id=guild.id, user_id=user_id, roles=roles, created_at=BASE + timedelta(microseconds=i * 7)
                )
            )
        for i in range(7):
            guild = guilds[0] if i < 5 else guilds[1]
            author = [member_id, other_id, gone.id][i % 3] if i < 5 else member_id
            analysis = models.ClubAnalysis(
                guild_id=guild.id,
                user_id=author,
                title=None if i % 3 == 0 else TEXTS[i % len(TEXTS)],
                summary=TEXTS[(i + 1) % len(TEXTS)],
                confidence=FLOATS[i],
                created_at=BASE + timedelta(minutes=i // 2, microseconds=0 if i % 2 else 500),
                updated_at=BASE + timedelta(hours=1, seconds=i),
            )
            session.add(analysis)
            await session.flush()
            w.analyses.append(str(analysis.id))
            for j in range(i % 4):  # 0 to 3 images and metrics
                session.add(
                    models.ClubAnalysisImage(
                        analysis_id=analysis.id,
                        image_url=f"https://cdn.example.com/{TEXTS[j]}.png",
                        original_name=None if j % 2 else TEXTS[(i + j) % len(TEXTS)],
                        file_size=None if j == 1 else j * 1_000_000_007 % 2_147_483_647,
                        position=3 - j if i % 2 else 0,  # equal positions: the id decides
                        created_at=BASE + timedelta(microseconds=j),
                    )
                )
                session.add(
                    models.ClubMetric(
                        analysis_id=analysis.id,
                        name=TEXTS[(i + 2 * j) % len(TEXTS)],
                        value=VALUES[(i + j) % len(VALUES)],
                        unit=None if j % 2 else "kg/\\m²",
                        category=None if j == 2 else TEXTS[j],
                        position=j,
                    )
                )
        for owner, titles in ((member_id, [TEXTS[0], None, TEXTS[3]]), (other_id, [TEXTS[4]])):
            for k, title in enumerate(titles):
                conversation = models.ChatConversation(
                    user_id=owner,
                    title=title,
                    created_at=BASE + timedelta(seconds=k, microseconds=k * 11),
                    updated_at=BASE + timedelta(days=2, seconds=k),
                )
                session.add(conversation)
                await session.flush()
                if owner == member_id and k == 1:
                    w.bare_conversation = str(conversation.id)
                    continue
                w.conversations.append(str(conversation.id))
                for m in range(5):
                    session.add(
                        models.ChatMessage(
                            conversation_id=conversation.id,
                            guild_id=guilds[0].id if m % 2 else None,
                            user_id=owner,
                            text=TEXTS[(m + k) % len(TEXTS)] or "x",
                            created_at=BASE + timedelta(seconds=m // 2, microseconds=0 if m % 2 else 42),
                        )
                    )
        for m in range(4):  # guild messages, one of them by an account that is gone
            session.add(
                models.ChatMessage(
                    guild_id=guilds[0].id,
                    user_id=None if m == 2 else member_id,
                    text=TEXTS[m],
                    created_at=BASE + timedelta(minutes=5, microseconds=m),
                )
            )
        await session.commit()
    return w


# -- the query documents of graphql/communities.graphql -------------------------------------------

GRAPHQL = Path(__file__).resolve().parents[2] / "graphql" / "communities.graphql"


def _queries() -> dict[str, str]:
    document = parse(GRAPHQL.read_text())
    out = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.operation == OperationType.QUERY:
            assert definition.name is not None
            out[definition.name.value] = print_ast(DocumentNode(definitions=(definition,)))
    return out


async def test_the_documented_queries_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    queries = _queries()
    assert set(queries) == {
        "Guild",
        "Guilds",
        "GuildDashboard",
        "SearchClubAnalyses",
        "ConversationHistory",
        "GuildChatHistory",
    }
    runs: list[tuple[str, dict[str, Any]]] = [
        *(("Guild", {"discordId": d}) for d in [*world.discord_ids, "nobody"]),
        *(("Guilds", {"search": s}) for s in (None, world.marker, "", "%", "\\", "é")),
        ("Guilds", {"search": world.marker, "after": "bm9wZQ"}),
        *(("GuildDashboard", {"search": s}) for s in (None, world.marker)),
        *(("SearchClubAnalyses", {"guildId": g}) for g in [*world.guilds, None, "nope", str(uuid.uuid4())]),
        ("SearchClubAnalyses", {"search": "é", "minConfidence": 0.2}),
        ("SearchClubAnalyses", {"minConfidence": 2.0}),
        *(("ConversationHistory", {"id": i}) for i in [*world.conversations, world.bare_conversation, "nope"]),
        ("ConversationHistory", {"id": world.conversations[0], "before": "bm9wZQ"}),
        *(("GuildChatHistory", {"guildId": g}) for g in [*world.guilds, str(uuid.uuid4())]),
    ]
    for viewer in VIEWERS:
        for name, variables in runs:
            _, ran = await compare(server, resolver_server, queries[name], variables, world.viewers[viewer])
            assert ran is None, (viewer, name, variables, ran)  # no communities root compiles yet


# -- generated selections of every root --------------------------------------------------------------

ANALYSIS_SCALARS = "id title summary confidence createdAt updatedAt"
GUILD_SCALARS = "id discordId name settings createdAt updatedAt"
USER = "user { id name username globalName avatarUrl isActive createdAt updatedAt email __typename }"
IMAGES = "images { id imageUrl originalName fileSize createdAt __typename }"
METRICS = "metrics { id name value unit category __typename }"
ANALYSIS_ALL = f"{ANALYSIS_SCALARS} {USER} {IMAGES} {METRICS} __typename"
GUILD_ALL = f"{GUILD_SCALARS} __typename"
PAGE = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }"


def _analysis_selections() -> list[str]:
    """ClubAnalysis: what its declaration covers (also under the staff roots below)."""
    out = [*ANALYSIS_SCALARS.split(), "__typename", USER, IMAGES, METRICS]
    out += [
        ANALYSIS_ALL,
        "a: id b: title a2: id i: images { u: imageUrl } m: metrics { v: value v2: value }",
        "...A fragment_marker",
        "... on ClubAnalysis { id summary } summary metrics { ... on ClubMetric { name } }",
        "user { id } user { name }",
    ]
    return out


def _guild_selections() -> list[str]:
    out = [*GUILD_SCALARS.split(), "__typename", GUILD_ALL, "a: name b: settings a2: name"]
    out += ["...G fragment_marker", "... on Guild { id } settings"]
    return out


def _guild_inside() -> list[str]:
    """Guild's relations: membership-checked, so only ever on the resolver path."""
    return [
        f"members(first: 2) {{ totalCount {PAGE} edges {{ cursor node {{ roles joinedAt {USER} }} }} }}",
        "members { nodes { roles guild { id name } clubAnalyses(first: 1) { totalCount nodes { id } } } }",
        f"clubAnalyses(first: 3) {{ totalCount {PAGE} nodes {{ {ANALYSIS_SCALARS} }} edges {{ cursor }} }}",
        "clubAnalyses(minConfidence: 0.5) { nodes { confidence guild { name } } }",
        f"chatMessages(first: 2) {{ totalCount {PAGE} nodes {{ id text cursor createdAt user {{ id }} }} }}",
        "chatMessages(last: 2) { nodes { id conversation { id title } guild { id } } }",
    ]


def _document(root: str, selection: str) -> str:
    if "fragment_marker" in selection:
        selection = selection.replace(" fragment_marker", "")
        fragment = (
            "A on ClubAnalysis { id confidence images { id } }" if "...A" in selection else "G on Guild { id settings }"
        )
        return f"{{ {root} {{ {selection} }} }} fragment {fragment}"
    return f"{{ {root} {{ {selection} }} }}"


async def test_every_root_keeps_the_resolvers(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    w = world
    unknown = str(uuid.uuid4())
    cases: list[tuple[str, str]] = []
    # The declared selections themselves are compared in test_declared_types_write_the_resolvers_bytes.
    for target in (w.analyses[3], w.analyses[6], unknown, "nope"):
        cases += [(f'clubAnalysis(id: "{target}")', s) for s in ("id", ANALYSIS_ALL, "id guild { name }")]
    for guild in (w.guilds[0], w.guilds[1], w.guilds[2], unknown):
        cases += [(f'guild(id: "{guild}")', s) for s in ("id", GUILD_ALL, *_guild_inside())]
    cases += [(f'guild(discordId: "{w.discord_ids[1]}")', s) for s in ("name", GUILD_ALL)]
    cases += [('guild(discordId: "nobody")', "id"), ("guild", "id"), (f'guild(id: "{unknown}", discordId: "x")', "id")]
    for arguments in ("first: 2", f'search: "{w.marker}"', "first: 501", 'after: "bm9wZQ"'):
        cases += [
            (f"guilds({arguments})", f"totalCount {PAGE} edges {{ cursor node {{ {GUILD_SCALARS} }} }}"),
            (f"guilds({arguments})", "nodes { name members { totalCount } }"),
        ]
    conversation = f"id title createdAt updatedAt {USER} __typename"
    messages = f"messages(first: 3) {{ totalCount {PAGE} edges {{ cursor node {{ id text createdAt }} }} }}"
    for target in (*w.conversations, w.bare_conversation, unknown, "nope"):
        for selection in ("id", conversation, messages, "messages(last: 2) { nodes { id } }"):
            cases.append((f'conversation(id: "{target}")', selection))
    for arguments in ("first: 2", "first: 501", 'after: "bm9wZQ"'):
        cases.append((f"conversations({arguments})", f"totalCount {PAGE} nodes {{ {conversation} }}"))
    cases += [("clubAnalyses(first: 2)", f"totalCount {PAGE} nodes {{ {ANALYSIS_SCALARS} }}")]
    for viewer in VIEWERS:
        for root, selection in cases:
            query = _document(root, selection)
            _, ran = await compare(server, resolver_server, query, None, w.viewers[viewer])
            assert ran is None, (viewer, query, ran)


async def test_beside_a_compiled_root(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    """A communities root beside one that compiles: graphql-core runs, the compiled root is spliced in."""
    query = f'{{ me {{ id name }} guild(id: "{world.guilds[0]}") {{ name settings }} conversations {{ totalCount }} }}'
    for viewer in ("member", "stranger", "staff"):
        _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
        assert ran == "compiled", (viewer, ran)


# -- the types' declarations, through roots registered for one test ----------------------------------

# Exact for `guilds:write` (and `*`): `access.require_reader` lets staff read any guild. Members
# are readers too, which this guard does not know: for them the statement bails.
STAFF = c.Rule(permissions=("guilds:write",))


@pytest.fixture
def staff_roots() -> Iterator[None]:
    """Query.clubAnalysis and Query.guild(id) compiled for staff only, while one test runs.

    These roots are not declared in app/communities/resolvers.py: for a member (the usual reader)
    every request would run a statement that bails and then the resolvers. Each document sent
    under them is unique to that test (the pipeline keeps plans by document text)."""
    added: dict[str, c.Root] = {
        "Query.clubAnalysis": c.ById("ClubAnalysis", bind=parse_id, guard=STAFF),
        "Query.guild": c.ById("Guild", bind=parse_id, guard=STAFF),
    }
    saved = {coordinate: c.ROOTS.get(coordinate) for coordinate in added}
    assert saved == dict.fromkeys(added), "declared for real: this test should go"
    c.ROOTS.update(added)
    try:
        yield
    finally:
        for coordinate in added:
            del c.ROOTS[coordinate]


def _staff_outcome(viewer: str, target: str) -> str:
    if viewer == "badtoken" or target == "nope":
        return "bail_before"  # the caller is asked (UNAUTHENTICATED), or the id does not parse
    return "compiled" if viewer in ("staff", "admin") else "bail_after"


async def test_declared_types_write_the_resolvers_bytes(
    server: LiveServer, resolver_server: LiveServer, world: World, staff_roots: None
) -> None:
    w = world
    unknown = str(uuid.uuid4())
    for viewer in VIEWERS:
        staff = viewer in ("staff", "admin")  # the others bail: a few cases show it
        analyses = (*w.analyses, unknown, "nope") if staff else (w.analyses[3], unknown, "nope")
        for target in analyses:
            for selection in _analysis_selections() if staff else [ANALYSIS_ALL]:
                query = "# staff roots\n" + _document(f'clubAnalysis(id: "{target}")', selection)
                _, ran = await compare(server, resolver_server, query, None, w.viewers[viewer])
                assert ran == _staff_outcome(viewer, target), (viewer, query, ran)
        for target in (*w.guilds, unknown, "nope") if staff else (w.guilds[0], unknown):
            for selection in _guild_selections() if staff else [GUILD_ALL]:
                query = "# staff roots\n" + _document(f'guild(id: "{target}")', selection)
                _, ran = await compare(server, resolver_server, query, None, w.viewers[viewer])
                assert ran == _staff_outcome(viewer, target), (viewer, query, ran)
    # With variables, and both roots in one operation (answered without graphql-core).
    query = (
        "# staff roots\nquery($a: ID!, $g: ID!) { x: clubAnalysis(id: $a) { id user { name } metrics { value } }"
        " y: guild(id: $g) { settings } }"
    )
    for i, analysis in enumerate(w.analyses):
        variables = {"a": analysis, "g": w.guilds[i % len(w.guilds)]}
        _, ran = await compare(server, resolver_server, query, variables, w.viewers["staff"])
        assert ran == "compiled", ran
    # What the declarations leave to Python keeps the resolvers even for staff.
    for root, selection in (
        (f'clubAnalysis(id: "{w.analyses[0]}")', "id guild { id }"),
        (f'guild(id: "{w.guilds[0]}")', "id members { totalCount }"),
    ):
        query = "# staff roots\n" + _document(root, selection)
        _, ran = await compare(server, resolver_server, query, None, w.viewers["staff"])
        assert ran is None, query


async def test_a_declared_analysis_is_one_statement(server: LiveServer, world: World, staff_roots: None) -> None:
    token = world.tokens["staff"]
    query = (
        "# staff roots, counted\nquery($id: ID!) { clubAnalysis(id: $id) {"
        f" {ANALYSIS_SCALARS} user {{ id name }} {IMAGES} {METRICS} }} }}"
    )
    variables = {"id": world.analyses[3]}
    await server.data(query, variables, token=token)  # the caller is known from here on
    data, statements = await counted(server, query, variables, token)
    assert len(data["clubAnalysis"]["images"]) == 3
    assert statements == 1
