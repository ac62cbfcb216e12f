"""Compiled reads and the communities domain (issue 16): every query answers byte for byte as the
resolvers do, for every kind of caller, and each case says how the compiled server ran it.

`clubAnalysis(id)` (readers of the analysis's guild: members and `guilds:write`), `conversation(id)`
and `conversations` (the caller's own) compile; `guild`, `guilds` and `clubAnalyses` keep the
resolvers (app/communities/resolvers.py says why), and so does any selection with a field that
needs Python (`Guild.members`, `ChatConversation.messages`, ...).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import DocumentNode, OperationDefinitionNode, OperationType, parse, print_ast

from app.accounts import models as accounts
from app.communities import models
from tests.api.compiled_support import compare
from tests.communities.support import new_guild, new_member, staff
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
        self.analyses: list[str] = []  # 0-4 in guild 0, 5-6 in guild 1
        self.conversations: list[str] = []  # member's two, then other's
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
    signed_out = ("anonymous", "apikey", "badtoken")
    for viewer in VIEWERS:
        for name, variables in runs:
            _, ran = await compare(server, resolver_server, queries[name], variables, world.viewers[viewer])
            if name == "Guilds":
                bad_cursor = "after" in variables
                expected = "bail_before" if viewer in signed_out or bad_cursor else "compiled"
                assert ran == expected, (viewer, name, variables, ran)
            elif name == "Guild":  # found by readers, null if unknown, else the resolver's error
                assert ran in ("compiled", "bail_after", "bail_before"), (viewer, name, variables, ran)
                if variables["discordId"] == "nobody":  # null; a bad token is asked about first
                    assert ran == ("bail_before" if viewer == "badtoken" else "compiled"), (viewer, ran)
            elif name == "ConversationHistory":  # its owner's: compiled, else the resolver's errors
                assert ran is not None, (viewer, name, variables, ran)
            elif name == "GuildDashboard":  # analyses under guilds and members keep their resolvers
                assert ran == ("bail_before" if viewer in signed_out else "hybrid"), (viewer, name, variables, ran)
            elif name == "GuildChatHistory":  # a guild's messages keep their resolver (guild access)
                assert ran in ("hybrid", "bail_after", "bail_before"), (viewer, name, variables, ran)
            else:  # Query.clubAnalyses (a Python cursor): resolvers
                assert ran is None, (viewer, name, variables, ran)


# -- generated selections of every root --------------------------------------------------------------

ANALYSIS_SCALARS = "id title summary confidence createdAt updatedAt"
GUILD_SCALARS = "id discordId name settings createdAt updatedAt"
USER = "user { id name username globalName avatarUrl isActive createdAt updatedAt email __typename }"
IMAGES = "images { id imageUrl originalName fileSize createdAt __typename }"
METRICS = "metrics { id name value unit category __typename }"
GUILD = f"guild {{ {GUILD_SCALARS} __typename }}"
ANALYSIS_ALL = f"{ANALYSIS_SCALARS} {USER} {IMAGES} {METRICS} {GUILD} __typename"
CONVERSATION_SCALARS = "id title createdAt updatedAt"
CONVERSATION_ALL = f"{CONVERSATION_SCALARS} {USER} __typename"
PAGE = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }"
# Readers of each guild of the world (access.can_read).
READERS = ({"member", "other", "staff", "admin"}, {"member", "staff", "admin"}, {"staff", "admin"})
UNKNOWN = str(uuid.uuid4())


def _analysis_selections() -> list[str]:
    out = [*ANALYSIS_SCALARS.split(), "__typename", USER, IMAGES, METRICS, GUILD, ANALYSIS_ALL]
    out += [
        "a: id b: title a2: id i: images { u: imageUrl } m: metrics { v: value v2: value } g: guild { n: name }",
        "...A fragment_marker",
        "... on ClubAnalysis { id summary } summary metrics { ... on ClubMetric { name } } guild { ...G }",
        "user { id } user { name } guild { id } guild { settings }",
    ]
    return out


def _conversation_selections() -> list[str]:
    return [*CONVERSATION_SCALARS.split(), "__typename", USER, CONVERSATION_ALL, "a: id b: title u: user { id }"]


def _member_selections() -> list[str]:
    """Guild.members under clubAnalysis.guild (a reader of the analysis reads its guild's members)."""
    return [
        f"guild {{ members(first: 2) {{ totalCount {PAGE} edges {{ cursor node {{ roles joinedAt {USER} }} }} }} }}",
        "guild { members { nodes { roles guild { id name } } } }",
        "guild { members(first: 0) { totalCount pageInfo { hasNextPage startCursor } } }",
        "guild { members(first: 1) { nodes { joinedAt } pageInfo { hasNextPage endCursor } } }",
    ]


def _python_selections() -> list[str]:
    """Selections of clubAnalysis with a field that keeps its resolver (Python cursors, backward
    pages): the whole root keeps the resolver path."""
    return [
        "guild { members { nodes { roles clubAnalyses(first: 1) { totalCount nodes { id } } } } }",
        f"guild {{ clubAnalyses(first: 3) {{ totalCount {PAGE} nodes {{ {ANALYSIS_SCALARS} }} edges {{ cursor }} }} }}",
        f"guild {{ chatMessages(first: 2) {{ totalCount {PAGE} nodes {{ id text cursor createdAt user {{ id }} }} }} }}",
        "guild { chatMessages(last: 2) { nodes { id conversation { id title } guild { id } } } }",
    ]


def _document(root: str, selection: str) -> str:
    if "fragment_marker" in selection:
        selection = selection.replace(" fragment_marker", "")
        return (
            f"{{ {root} {{ {selection} }} }} fragment A on ClubAnalysis {{ id confidence images {{ id }} guild {{ ...G }} }}"
            " fragment G on Guild { id settings }"
        )
    if "...G" in selection:
        return f"{{ {root} {{ {selection} }} }} fragment G on Guild {{ id settings }}"
    return f"{{ {root} {{ {selection} }} }}"


def _analysis_outcome(world: World, viewer: str, target: str) -> str:
    if viewer == "badtoken" or target == "nope":
        return "bail_before"  # the caller is asked (UNAUTHENTICATED), or the id does not parse
    if target not in world.analyses:
        return "compiled"  # null, for anyone
    guild = 0 if world.analyses.index(target) < 5 else 1
    return "compiled" if viewer in READERS[guild] else "bail_after"  # FORBIDDEN or UNAUTHENTICATED


async def test_club_analysis_compiles_for_readers(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    for viewer in VIEWERS:
        readers = viewer in ("member", "staff", "admin")  # the others see a few cases
        targets = (*world.analyses, UNKNOWN, "nope") if readers else (world.analyses[0], world.analyses[6], UNKNOWN)
        for target in targets:
            selections = [*_analysis_selections(), *_member_selections()] if readers else [ANALYSIS_ALL, "id"]
            for selection in selections:
                query = _document(f'clubAnalysis(id: "{target}")', selection)
                _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
                assert ran == _analysis_outcome(world, viewer, target), (viewer, query, ran)
    lookup = f"query($id: ID!) {{ clubAnalysis(id: $id) {{ {ANALYSIS_ALL} }} }}"
    for viewer in ("other", "stranger", "apikey", "anonymous"):
        for target in (*world.analyses, UNKNOWN):
            _, ran = await compare(server, resolver_server, lookup, {"id": target}, world.viewers[viewer])
            assert ran == _analysis_outcome(world, viewer, target), (viewer, target, ran)
    members = (
        "query($id: ID!, $n: Int, $a: String) { clubAnalysis(id: $id) { guild { members(first: $n, after: $a) {"
        f" totalCount {PAGE} edges {{ cursor node {{ roles joinedAt user {{ id name }} }} }} }} }} }} }}"
    )
    for size in (1, 2):  # every page of guild 0's members (the deleted one left out)
        after = None
        while True:
            page_variables: dict[str, Any] = {"id": world.analyses[0], "n": size, "a": after}
            data, ran = await compare(server, resolver_server, members, page_variables, world.viewers["other"])
            assert ran == "compiled", data
            page = data["data"]["clubAnalysis"]["guild"]["members"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    for variables in ({"n": 501}, {"a": "bm9wZQ"}):
        _, ran = await compare(server, resolver_server, members, {"id": world.analyses[0], **variables}, {})
        assert ran == "bail_before", variables


def _conversation_outcome(world: World, viewer: str, target: str) -> str:
    if viewer in ("anonymous", "apikey", "badtoken") or target == "nope":
        return "bail_before"  # UNAUTHENTICATED, or the id does not parse
    if target not in world.conversations:
        return "compiled" if target != world.bare_conversation or viewer == "member" else "bail_after"
    owner = "member" if world.conversations.index(target) < 2 else "other"
    return "compiled" if viewer == owner else "bail_after"  # FORBIDDEN


async def test_conversations_compile_for_their_owner(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    for viewer in VIEWERS:
        for target in (*world.conversations, world.bare_conversation, UNKNOWN, "nope"):
            for selection in _conversation_selections():
                query = _document(f'conversation(id: "{target}")', selection)
                _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
                assert ran == _conversation_outcome(world, viewer, target), (viewer, query, ran)
        signed_in = viewer not in ("anonymous", "apikey", "badtoken")
        for arguments in ("first: 2", "first: 0", "first: 10", ""):
            for selection in (
                f"totalCount {PAGE} edges {{ cursor node {{ {CONVERSATION_ALL} }} __typename }} __typename",
                "nodes { id } pageInfo { endCursor } totalCount",
                "t: totalCount",
                "pageInfo { hasPreviousPage }",
            ):
                query = _document(f"conversations({arguments})" if arguments else "conversations", selection)
                _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
                assert ran == ("compiled" if signed_in else "bail_before"), (viewer, query, ran)
    walk = (
        "query($n: Int, $a: String) { conversations(first: $n, after: $a) { totalCount"
        f" {PAGE} edges {{ cursor node {{ {CONVERSATION_ALL} }} }} }} }}"
    )
    for size in (1, 2):
        after = None
        while True:
            data, ran = await compare(server, resolver_server, walk, {"n": size, "a": after}, world.viewers["member"])
            assert ran == "compiled"
            page = data["data"]["conversations"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    for variables in ({"n": 501}, {"n": -1}, {"a": "bm9wZQ"}, {"a": "Z3VpbGQ6eA"}):
        _, ran = await compare(server, resolver_server, walk, variables, world.viewers["member"])
        assert ran == "bail_before", variables


async def test_what_needs_python_runs_hybrid(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    """A field that needs Python (a Python cursor, guild access on messages) keeps its resolver,
    and the rest of its root still runs as one statement (a hybrid answer): identical bytes,
    errors and paths included. A root that is not declared keeps the resolvers."""
    cases: list[tuple[str, str]] = []
    for target in (world.analyses[0], world.analyses[6], UNKNOWN):
        cases += [(f'clubAnalysis(id: "{target}")', s) for s in _python_selections()]
    for target in (world.conversations[0], UNKNOWN):
        cases += [(f'conversation(id: "{target}")', "messages { nodes { conversation { id } guild { id } } }")]
    cases += [("guilds(first: 2)", "nodes { name clubAnalyses(first: 1) { totalCount } }")]
    cases += [("clubAnalyses(first: 2)", f"totalCount {PAGE} nodes {{ {ANALYSIS_SCALARS} }}")]
    hybrid: set[str] = set()
    for viewer in VIEWERS:
        for root, selection in cases:
            query = _document(root, selection)
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            if root.startswith("clubAnalyses("):
                assert ran is None, (viewer, query, ran)
            else:
                assert ran in ("hybrid", "compiled", "bail_before", "bail_after"), (viewer, query, ran)
            if ran == "hybrid":
                hybrid.add(query)
    declared = {_document(root, selection) for root, selection in cases if not root.startswith("clubAnalyses(")}
    assert declared <= hybrid, declared - hybrid  # each one ran hybrid for some caller


async def test_guilds_compile_for_their_readers(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    """guild(id | discordId) and guilds: a reader's (a member, or guilds:write) answer compiled, the
    resolver's errors for anyone else, by name then id page after page."""
    signed_out = ("anonymous", "apikey", "badtoken")
    for viewer in VIEWERS:
        headers = world.viewers[viewer]
        for guild in (*world.guilds, UNKNOWN):
            for selection in (f"{GUILD_SCALARS} __typename", "a: name b: settings", "members { totalCount }"):
                _, ran = await compare(
                    server, resolver_server, _document(f'guild(id: "{guild}")', selection), None, headers
                )
                assert ran is not None, (viewer, guild, selection)
                if guild == UNKNOWN:  # null for anyone; a bad token is asked about first
                    assert ran == ("bail_before" if viewer == "badtoken" else "compiled"), (viewer, ran)
        for arguments in ("", f'discordId: "{world.discord_ids[1]}"', f'id: "{UNKNOWN}", discordId: "x"', 'id: "nope"'):
            query = _document(f"guild({arguments})" if arguments else "guild", "id name")
            _, ran = await compare(server, resolver_server, query, None, headers)
            if arguments.startswith("discordId") and viewer != "badtoken":
                assert ran in ("compiled", "bail_after"), (viewer, arguments, ran)
            else:
                assert ran == "bail_before", (viewer, arguments, ran)  # BAD_USER_INPUT there
        listing = (
            "query($s: String, $n: Int, $a: String) { guilds(search: $s, first: $n, after: $a) { totalCount"
            f" {PAGE} edges {{ cursor node {{ {GUILD_SCALARS} }} }} }} }}"
        )
        for size in (1, 2):
            after = None
            while True:
                data, ran = await compare(
                    server, resolver_server, listing, {"s": world.marker, "n": size, "a": after}, headers
                )
                if viewer in signed_out:
                    assert ran == "bail_before", (viewer, ran)
                    break
                assert ran == "compiled", (viewer, ran)
                page = data["data"]["guilds"]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
        for variables in ({"n": 501}, {"a": "bm9wZQ"}, {"s": "%"}, {"s": ""}):
            _, ran = await compare(server, resolver_server, listing, variables, headers)
            bad = "n" in variables or "a" in variables
            assert ran == ("bail_before" if viewer in signed_out or bad else "compiled"), (viewer, variables, ran)


async def test_messages_page_both_ways(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    """A conversation's messages, oldest first: forward with first/after and backward with
    last/before (read from the end, written in order), every page, for its owner; the resolvers'
    errors for anyone else."""
    query = (
        "query($id: ID!, $f: Int, $a: String, $l: Int, $b: String) { conversation(id: $id) { title"
        f" messages(first: $f, after: $a, last: $l, before: $b) {{ totalCount {PAGE}"
        " edges { cursor node { id text createdAt cursor user { id } conversation { id } } } } } }"
    )
    longest = 0
    for conversation in [*world.conversations, world.bare_conversation]:
        for backwards in (False, True):
            for size in (1, 2, 3):
                cursor = None
                pages = 0
                while pages < 20:
                    variables: dict[str, Any] = {"id": conversation}
                    variables.update({"l": size, "b": cursor} if backwards else {"f": size, "a": cursor})
                    data, ran = await compare(server, resolver_server, query, variables, world.viewers["member"])
                    if ran != "compiled":  # not the member's conversation: the resolver's FORBIDDEN
                        assert ran == "bail_after", (conversation, ran)
                        break
                    pages += 1
                    info = data["data"]["conversation"]["messages"]["pageInfo"]
                    if not info["hasPreviousPage" if backwards else "hasNextPage"]:
                        break
                    cursor = info["startCursor" if backwards else "endCursor"]
                longest = max(longest, pages)
    assert longest >= 3  # walks of several pages each way were compared
    for variables in ({"l": 2, "f": 2}, {"l": 501}, {"l": 2, "b": "garbage"}, {"l": 0}, {"f": 0, "a": None}):
        for viewer in ("member", "stranger", "anonymous"):
            _, ran = await compare(
                server, resolver_server, query, {"id": world.conversations[0], **variables}, world.viewers[viewer]
            )
            assert ran is not None, (variables, viewer)


async def test_several_roots(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    both = (
        "query($a: ID!, $c: ID!) { x: clubAnalysis(id: $a) { id guild { name } metrics { value } }"
        " y: conversation(id: $c) { title } z: conversations(first: 1) { totalCount } }"
    )
    for analysis in world.analyses:
        variables = {"a": analysis, "c": world.conversations[0]}
        _, ran = await compare(server, resolver_server, both, variables, world.viewers["member"])
        assert ran == "compiled"  # answered without graphql-core
    variables = {"a": world.analyses[0], "c": world.conversations[0]}  # other reads the analysis, not the conversation
    _, ran = await compare(server, resolver_server, both, variables, world.viewers["other"])
    assert ran == "compiled+bail_after"  # y bails (FORBIDDEN): the resolvers answer all of it
    beside = f'{{ me {{ id name }} guild(id: "{world.guilds[0]}") {{ name settings }} conversations {{ totalCount }} }}'
    for viewer in ("member", "stranger", "staff"):
        _, ran = await compare(server, resolver_server, beside, None, world.viewers[viewer])
        # A stranger may not read the guild: its FORBIDDEN comes from the resolvers.
        assert ran == ("compiled+bail_after" if viewer == "stranger" else "compiled"), (viewer, ran)


async def test_an_analysis_is_one_statement(server: LiveServer, world: World) -> None:
    token = world.tokens["member"]
    query = f"query($id: ID!) {{ clubAnalysis(id: $id) {{ {ANALYSIS_ALL} }} }}"
    variables = {"id": world.analyses[3]}
    await server.data(query, variables, token=token)  # the caller is known from here on
    data, statements = await counted(server, query, variables, token)
    assert len(data["clubAnalysis"]["images"]) == 3
    assert data["clubAnalysis"]["guild"]["id"] == world.guilds[0]
    assert statements == 1


async def test_conversations_about_a_guild_per_viewer(server: LiveServer, resolver_server: LiveServer) -> None:
    """`conversations(guildId:)` binds the caller in its membership guard: a member's answer is
    compiled, a stranger's and a missing guild's are the resolvers' errors, byte for byte."""
    bot, _ = await staff(server)
    guild = await new_guild(server, bot)
    member, _ = await new_member(server, bot, guild["id"])
    stranger = await new_user(server)
    create = 'mutation($g: ID) { createConversation(title: "about", guildId: $g) { id } }'
    await server.data(create, {"g": guild["id"]}, token=member)
    await server.data(create, {}, token=member)
    query = "query($g: ID) { conversations(guildId: $g) { totalCount nodes { id title guild { id } } } }"
    cases = [
        (member, {"g": guild["id"]}, "hybrid"),
        (member, {}, "hybrid"),
        (stranger, {"g": guild["id"]}, None),
        (member, {"g": str(uuid.uuid4())}, None),
    ]
    for token, variables, expected in cases:
        answer, ran = await compare(server, resolver_server, query, variables, {"authorization": f"Bearer {token}"})
        if expected is not None:
            assert ran == expected and not answer.get("errors"), (variables, ran, answer)
        else:
            assert answer.get("errors") and ran != "hybrid", (variables, ran)
