"""Compiled reads of the workflows domain (issue 16) answer byte for byte as the resolvers do.

Roots `workflow`, `workflows`, `execution`, `files` and `file` compile (app/workflows/resolvers.py);
Workflow, WorkflowEdge, Execution and File are declared (app/workflows/types.py). Python fields
(Workflow.versions) keep their resolvers, and the rest of their root still compiles (hybrid).
Each case says how the compiled server ran (`expect`): compiled, a bail before the statement
(anonymous callers, API keys and bad tokens: every root asks who calls; bad arguments), a bail
after it (FORBIDDEN, a JSON null in a non-null field), or hybrid (a Python field beside).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse, print_ast
from sqlalchemy import text

from app.accounts import models as accounts
from app.workflows import models
from tests.api.compiled_support import callers, compare
from tests.support import LiveServer, counted

# Strings that exercise every escape orjson and to_json must agree on.
NAMES = ['Quote "q" and \\ back', "tab\tnew\nline\x01\x1f", "café é ü", "sep\u2028\u2029", "astral 🍕𝄞", "", "  "]
CONFIGS: list[Any] = [
    {},
    [],
    {"a": {"b": [1, 2.5, {"c": None}], "é": 'q"\\\u2028🍕'}},
    {"x": 0.1, "y": 1e-07, "z": -0.0, "big": 12345678901234567},
    {"k": [[], {}], "t": True, "f": False},
    [1, "two", None, 0.30000000000000004],
    0,
    "",
]
# Written into jsonb as SQL text: jsonb keeps a decimal's digits (2.50, 1E+2), a 24-digit integer.
RAW_CONFIG = '{"d": 2.50, "e": 1E+2, "big": 123456789012345678901234, "n": -0, "s": "a\\u0001b", "u": "\\u2028"}'
POSITIONS = [0.1, -0.0, None, 1e-07, 12345.678, -3.4e38, 1.0, 2.5e-06]
BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DOCUMENTS = Path(__file__).resolve().parents[2] / "graphql" / "workflows.graphql"
VIEWERS = ("anonymous", "owner", "other", "writer", "admin", "apikey", "badtoken")


class World:
    """A fixed set of rows and the callers who look at them."""

    def __init__(self) -> None:
        self.viewers: dict[str, dict[str, str]] = {}
        self.ids: dict[str, uuid.UUID] = {}  # viewer -> user id (signed-in viewers)
        self.tag = ""  # on every workflow seeded here, so that listings hold only these
        self.workflows: dict[str, str] = {}  # label -> id
        self.executions: dict[str, str] = {}
        self.files: dict[str, str] = {}


def _at(minutes: int, micro: int = 0) -> datetime:
    return BASE + timedelta(minutes=minutes, microseconds=micro)


@pytest.fixture(scope="module")
async def world(server: LiveServer) -> World:
    w = World()
    people = await callers(server, ("workflows:write",))
    w.viewers, w.ids = people.headers, people.ids
    owner, other = people.ids["owner"], people.ids["other"]
    w.tag = f"wf-{uuid.uuid4().hex[:8]}"
    async with server.deps.db.session() as session:
        for name in ("owner", "other"):  # awkward names on the owners, as `owner { name }` shows them
            person = await session.get(accounts.User, w.ids[name])
            assert person is not None
            person.name = NAMES[0] if name == "owner" else NAMES[4]
        # Two owners, public and private, every status, a deleted one; two share an instant.
        plan = [
            ("own-public", owner, True, "published", None),
            ("own-private", owner, False, "draft", None),
            ("own-archived", owner, True, "archived", None),
            ("own-deleted", owner, True, "draft", BASE),
            ("other-public", other, True, "published", None),
            ("other-private", other, False, "published", None),
            ("other-template", other, False, "draft", None),
            ("other-deleted", other, False, "draft", _at(5, 5)),
            ("own-raw", owner, False, "draft", None),
            ("own-null", owner, False, "draft", None),
        ]
        for i, (label, user, public, status, deleted) in enumerate(plan):
            workflow = models.Workflow(
                user_id=user,
                name=f"{NAMES[i % len(NAMES)]} {label}",
                description=None if i % 3 == 1 else NAMES[(i + 2) % len(NAMES)],
                version=1 + i % 3,
                status=status,
                is_template=label == "other-template",
                is_public=public,
                tags=[w.tag] + [[], ["é", 'q"'], ["\\", "a b", "🍕"]][i % 3],
                configuration=CONFIGS[i % 6],
                created_at=_at(i // 2 * 2, 0 if i % 3 else 123456),
                updated_at=_at(60 * 24, i),
                deleted_at=deleted,
            )
            session.add(workflow)
            await session.flush()
            w.workflows[label] = str(workflow.id)
            for j in range(i % 5):  # 0 to 4 nodes, some made in one instant (the id breaks the tie)
                session.add(
                    models.WorkflowNode(
                        workflow_id=workflow.id,
                        node_key=f"n{j} {NAMES[j % len(NAMES)]}",
                        node_type=["start", "http", "end é"][j % 3],
                        label=None if j % 2 else NAMES[(i + j) % len(NAMES)],
                        position_x=POSITIONS[(i + j) % len(POSITIONS)],
                        position_y=POSITIONS[(i + 2 * j + 1) % len(POSITIONS)],
                        configuration=CONFIGS[(i + j) % len(CONFIGS)],
                        created_at=_at(1, j // 2 * 1000 + (7 if j == 3 else 0)),
                        updated_at=_at(2),
                    )
                )
            await session.flush()
            for j in range(max(0, i % 5 - 1)):  # a chain: n0 -> n1 -> ...
                session.add(
                    models.WorkflowEdge(
                        workflow_id=workflow.id,
                        source_node_key=f"n{j} {NAMES[j % len(NAMES)]}",
                        target_node_key=f"n{j + 1} {NAMES[(j + 1) % len(NAMES)]}",
                        edge_type=["default", "on error", 'q"'][j % 3],
                        configuration=CONFIGS[(i + j + 3) % 6],
                        created_at=_at(3, 0 if j < 2 else 500),
                    )
                )
            snapshot: list[dict[str, Any]] = [
                {"id": str(uuid.uuid4()), "key": "a", "type": "start", "configuration": []},
                {"id": str(uuid.uuid4()), "key": "b é", "type": "end", "label": "L", "position_x": 0.1},
            ]
            for version in range(1, 2 + i % 3):  # published snapshots, some with missing keys
                session.add(
                    models.WorkflowVersion(
                        workflow_id=workflow.id,
                        version=version,
                        name=f"{NAMES[version % len(NAMES)]} v{version}",
                        description=None if version % 2 else "d\n",
                        configuration=CONFIGS[version % 6],
                        nodes=snapshot[:version],
                        edges=[]
                        if version == 1
                        else [{"id": str(uuid.uuid4()), "source": "a", "target": "b é", "type": "x"}],
                        created_at=_at(10 + version, version * 11),
                        created_by=user,
                    )
                )
        await session.flush()
        for label in ("own-raw", "own-null"):
            value = RAW_CONFIG if label == "own-raw" else "null"
            await session.execute(
                text("UPDATE workflows SET configuration = CAST(:v AS jsonb) WHERE id = :id"),
                {"v": value, "id": uuid.UUID(w.workflows[label])},
            )
        # Executions: the owner's and another user's (on a public workflow), every status; one on a
        # workflow deleted since.
        runs: list[tuple[str, str, uuid.UUID, str, int | None]] = [
            ("own-1", "own-archived", owner, "completed", 1),
            ("own-2", "own-public", owner, "running", 1),
            ("other-on-own", "own-archived", other, "failed", 2),
            ("other-1", "other-private", other, "pending", None),
            ("own-on-other", "other-public", owner, "cancelled", 1),
            ("on-deleted", "own-deleted", owner, "completed", None),
        ]
        for k, (label, workflow_label, user, status, pinned) in enumerate(runs):
            execution = models.Execution(
                workflow_id=uuid.UUID(w.workflows[workflow_label]),
                user_id=user,
                workflow_version=pinned,
                status=status,
                input_data=[None, {}, CONFIGS[2], [], 0.5][k % 5],
                output_data=None if k % 2 else CONFIGS[(k + 3) % len(CONFIGS)],
                error_message=NAMES[k % len(NAMES)] if status == "failed" else None,
                started_at=None if status == "pending" else _at(20 + k, k * 999),
                completed_at=_at(30 + k) if status in ("completed", "failed", "cancelled") else None,
                created_at=_at(20, 0 if k % 2 else 42),
                log_count=3 if k == 1 else 0,
            )
            session.add(execution)
            await session.flush()
            w.executions[label] = str(execution.id)
            if k == 1:
                for n in range(1, 4):
                    session.add(
                        models.ExecutionLog(
                            execution_id=execution.id,
                            number=n,
                            node_key=None if n == 2 else NAMES[n],
                            log_level=["debug", "info", "warn", "error"][n],
                            message=NAMES[n + 2],
                            data=None if n == 1 else CONFIGS[n],
                            created_at=_at(21, n * 5),
                        )
                    )
        files = [
            ("own-private", owner, False, None),
            ("own-public", owner, True, None),
            ("own-deleted", owner, True, _at(9)),
            ("own-other", owner, False, None),
            ("other-public", other, True, None),
            ("other-private", other, False, None),
        ]
        for k, (label, user, public, deleted) in enumerate(files):
            file = models.File(
                user_id=user,
                filename=f"{label}/f{k}.bin",
                original_filename=NAMES[k % len(NAMES)] or "x",
                mime_type="application/octet-stream",
                file_size=[0, 1, 2**40, 2**53, 12345, 7][k],
                file_path=f"{user}/{label}/f{k}.bin",
                checksum=None if k % 2 else "sha256:" + "ab" * 32,
                is_public=public,
                created_at=_at(40 + k // 2, 0 if k % 3 else 654321),
                deleted_at=deleted,
            )
            session.add(file)
            await session.flush()
            w.files[label] = str(file.id)
        await session.commit()
    return w


def _operations() -> dict[str, str]:
    """The query documents of graphql/workflows.graphql, by operation name."""
    document = parse(DOCUMENTS.read_text())
    return {
        d.name.value: print_ast(d)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode) and d.operation.value == "query" and d.name is not None
    }


ANONYMOUS = ("anonymous", "apikey", "badtoken")
# Execution label -> (who started it, who owns its workflow); file and workflow labels start with
# their owner ("own-": owner, "other-": other).
RUNS = {
    "own-1": ("owner", "owner"),
    "own-2": ("owner", "owner"),
    "other-on-own": ("other", "owner"),
    "other-1": ("other", "other"),
    "own-on-other": ("owner", "other"),
    "on-deleted": ("owner", "owner"),
}
PUBLIC = {"own-public", "own-archived", "own-deleted", "other-public"}
DELETED = {"own-deleted", "other-deleted"}
STAFF = ("writer", "admin")


def _owner(label: str) -> str:
    return "owner" if label.startswith("own-") else "other"


def expect(python: bool, viewer: str, state: str) -> str | None:
    """How the compiled server runs a root: `state` is "ok" (an answer, null included), "bad" (an
    argument the resolver refuses), "forbidden" or "error" (an error after reading); `python`: a
    field of the selection keeps its resolver."""
    if viewer in ANONYMOUS or state == "bad":
        return "bail_before"
    if state in ("forbidden", "error"):
        return "bail_after"
    return "hybrid" if python else "compiled"  # hybrid: a Python field beside the statement's


def _too_costly(data: dict[str, Any]) -> bool:
    """Refused before execution by the cost limit (versions' nested lists are costed at 100 each)."""
    return data["data"] is None and any("maxCost" in e.get("extensions", {}) for e in data.get("errors", []))


def _top(selection: str) -> list[str]:
    """The words of a selection outside any braces: its own fields, not its children's."""
    words, depth, word = [], 0, ""
    for ch in selection + " ":
        if ch in "{}":
            depth += 1 if ch == "{" else -1
        if depth == 0 and (ch.isalnum() or ch == "_"):
            word += ch
        else:
            if word:
                words.append(word)
            word = ""
    return words


def workflow_state(viewer: str, label: str, selection: str) -> str:
    if label in DELETED:
        return "ok"  # null
    if label not in PUBLIC and viewer != _owner(label) and viewer not in STAFF:
        return "forbidden"
    return "error" if label == "own-null" and "configuration" in _top(selection) else "ok"


def execution_state(viewer: str, label: str) -> str:
    started, owns = RUNS[label]
    return "ok" if viewer in (started, owns) or viewer in STAFF else "forbidden"


def file_state(viewer: str, label: str) -> str:
    if label == "own-deleted" or label in PUBLIC or viewer == _owner(label):
        return "ok"
    return "forbidden"


def _python(selection: str, fields: tuple[str, ...]) -> bool:
    """Whether the selection has a Python field of its own (not of a child's)."""
    return any(word in fields for word in _top(selection))


WORKFLOW_PYTHON = ("versions",)
EXECUTION_PYTHON: tuple[str, ...] = ()


async def test_the_documents_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    operations = _operations()
    assert sorted(operations) == ["Execution", "Files", "Workflow", "Workflows"]
    unknown = str(uuid.uuid4())
    for viewer in VIEWERS:
        cases: list[tuple[str, dict[str, Any], str | None]] = []
        # Workflow selects a Python field (versions: backward pages): hybrid where it answers.
        selection = "id name nodes { configuration } versions { version }"
        cases += [
            ("Workflow", {"id": i}, expect(True, viewer, workflow_state(viewer, label, selection)))
            for label, i in world.workflows.items()
        ]
        cases += [
            ("Workflow", {"id": unknown}, expect(True, viewer, "ok")),
            ("Workflow", {"id": "nope"}, "bail_before"),
        ]
        listed = expect(False, viewer, "ok")
        cases += [
            ("Workflows", {"tag": world.tag}, listed),
            ("Workflows", {"tag": world.tag, "status": "PUBLISHED"}, listed),
            ("Workflows", {"tag": world.tag, "search": "café"}, listed),
            ("Workflows", {"tag": world.tag, "search": "%"}, listed),
            ("Workflows", {"tag": world.tag, "search": ""}, listed),
            ("Workflows", {"tag": "é"}, listed),
            ("Workflows", {"tag": ""}, listed),
            ("Workflows", {"tag": world.tag, "after": "bm9wZQ"}, "bail_before"),
            ("Files", {}, listed),
            ("Files", {"after": "garbage"}, "bail_before"),
        ]
        for name, variables, expected in cases:
            _, ran = await compare(server, resolver_server, operations[name], variables, world.viewers[viewer])
            assert ran == expected, (viewer, name, variables, ran)
        # Execution compiles, its workflow and logs included; a deleted or hidden workflow is the
        # resolver's NOT_FOUND or FORBIDDEN.
        for label, execution in [*world.executions.items(), ("unknown", unknown), ("bad", "nope")]:
            for variables in ({"id": execution}, {"id": execution, "after": "garbage"}):
                _, ran = await compare(
                    server, resolver_server, operations["Execution"], variables, world.viewers[viewer]
                )
                if viewer in ANONYMOUS or label == "bad" or "after" in variables:
                    assert ran == "bail_before", (viewer, label, variables, ran)
                elif label == "unknown":
                    assert ran == "compiled", (viewer, label, ran)
                else:
                    assert ran in ("compiled", "bail_after"), (viewer, label, ran)
    # The answers say what they should (so that the cases above are not all errors).
    data, _ = await compare(
        server, resolver_server, operations["Workflow"], {"id": world.workflows["own-public"]}, world.viewers["other"]
    )
    assert data["data"]["workflow"]["name"].endswith("own-public")
    data, _ = await compare(
        server, resolver_server, operations["Workflow"], {"id": world.workflows["own-private"]}, world.viewers["other"]
    )
    assert data["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    data, _ = await compare(
        server, resolver_server, operations["Workflows"], {"tag": world.tag}, world.viewers["writer"]
    )
    assert data["data"]["workflows"]["totalCount"] == 8  # every live one
    data, _ = await compare(
        server, resolver_server, operations["Workflows"], {"tag": world.tag}, world.viewers["other"]
    )
    assert data["data"]["workflows"]["totalCount"] == 5  # their own live ones and the owner's public ones
    data, _ = await compare(server, resolver_server, operations["Files"], {}, world.viewers["owner"])
    assert len(data["data"]["files"]["nodes"]) == 3  # live and own


WORKFLOW_SCALARS = (
    "id name description version status isTemplate isPublic tags configuration createdAt updatedAt deletedAt"
)
EXECUTION_SCALARS = "id workflowVersion status input output errorMessage startedAt completedAt createdAt"
FILE_SCALARS = "id filename originalFilename mimeType size checksum path isPublic createdAt"


def _selections(scalars: str, extra: list[str]) -> list[str]:
    """Each field alone, all of them, aliases, a fragment spread, an inline fragment, __typename."""
    fields = scalars.split()
    return [
        *fields,
        f"{scalars} __typename",
        f"a: {fields[0]} b: {fields[1]} a2: {fields[0]}",
        "...F",
        f"... {{ {fields[1]} }} {fields[0]}",
        *extra,
    ]


WORKFLOW_EXTRA = [
    "owner { id name email username createdAt __typename }",
    "edges { id source target type configuration __typename }",
    "id e: edges { configuration } o: owner { name } edges { id }",
    "executions(first: 3) { totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }"
    " edges { cursor node { id status } __typename } nodes { id user { id } } __typename }",
    f"executions(first: 10) {{ nodes {{ {EXECUTION_SCALARS} user {{ id name }} __typename }} }}",
    "executions(status: FAILED) { totalCount nodes { id status errorMessage } }",
    "executions { totalCount pageInfo { hasPreviousPage } }",
    "executions(first: 0) { pageInfo { hasNextPage } nodes { id } }",
    # Python fields: WorkflowNode is not declared; versions pages backwards.
    "nodes { id key type label positionX positionY configuration __typename }",
    "versions { version name description configuration createdAt createdBy { id } nodes { id key type label"
    " positionX positionY configuration } edges { id source target type configuration } }",
    "versions(last: 1) { version } v: versions(last: 2, before: 2) { version }",
]
EXECUTION_EXTRA = [
    "user { id name email }",
    "workflow { id name }",
    "logs { totalCount nodes { id nodeKey level message data createdAt cursor } }",
]


async def test_generated_selections_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    for viewer in ("owner", "other", "writer", "anonymous"):
        for selection in _selections(WORKFLOW_SCALARS, WORKFLOW_EXTRA):
            fragment = " fragment F on Workflow { id name tags }" if "...F" in selection else ""
            python = _python(selection, WORKFLOW_PYTHON)
            lookup = f"query($id: ID!) {{ workflow(id: $id) {{ {selection} }} }}{fragment}"
            for label in (
                "own-public",
                "own-private",
                "other-public",
                "other-private",
                "own-null",
                "own-raw",
                "own-deleted",
            ):
                variables = {"id": world.workflows[label]}
                data, ran = await compare(server, resolver_server, lookup, variables, world.viewers[viewer])
                expected = expect(python, viewer, workflow_state(viewer, label, selection))
                assert ran == (None if _too_costly(data) else expected), (viewer, lookup, label, ran)
            listing = f"query($t: String) {{ workflows(tag: $t, first: 20) {{ nodes {{ {selection} }} totalCount }} }}{fragment}"
            data, ran = await compare(server, resolver_server, listing, {"t": world.tag}, world.viewers[viewer])
            if _too_costly(data):  # refused before execution: nothing runs
                assert ran is None, (viewer, listing, ran)
                continue
            # The owner's `own-null` (a JSON null configuration) is among what the owner and staff see.
            sees_null = viewer in ("owner", *STAFF) and workflow_state(viewer, "own-null", selection) == "error"
            assert ran == expect(python, viewer, "error" if sees_null else "ok"), (viewer, listing, ran)
        for selection in _selections(EXECUTION_SCALARS, EXECUTION_EXTRA):
            fragment = " fragment F on Execution { id status }" if "...F" in selection else ""
            python = _python(selection, EXECUTION_PYTHON)
            lookup = f"query($id: ID!) {{ execution(id: $id) {{ {selection} }} }}{fragment}"
            for label in RUNS:
                variables = {"id": world.executions[label]}
                _, ran = await compare(server, resolver_server, lookup, variables, world.viewers[viewer])
                expected = expect(python, viewer, execution_state(viewer, label))
                if "workflow" in _top(selection) and expected == "compiled":
                    # its workflow deleted (NOT_FOUND) or private to this caller (FORBIDDEN)
                    assert ran in ("compiled", "bail_after"), (viewer, lookup, label, ran)
                else:
                    assert ran == expected, (viewer, lookup, label, ran)
        for selection in _selections(FILE_SCALARS, ["owner { id username email }"]):
            fragment = " fragment F on File { id filename }" if "...F" in selection else ""
            lookup = f"query($id: ID!) {{ file(id: $id) {{ {selection} }} }}{fragment}"
            for label in world.files:
                variables = {"id": world.files[label]}
                _, ran = await compare(server, resolver_server, lookup, variables, world.viewers[viewer])
                assert ran == expect(False, viewer, file_state(viewer, label)), (viewer, lookup, label, ran)
            listing = (
                f"{{ files(first: 2) {{ nodes {{ {selection} }} edges {{ cursor node {{ id }} }} totalCount"
                f" pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} __typename }} }}{fragment}"
            )
            _, ran = await compare(server, resolver_server, listing, None, world.viewers[viewer])
            assert ran == expect(False, viewer, "ok"), (viewer, listing, ran)
        unknown = str(uuid.uuid4())
        for root in ("workflow", "execution", "file"):
            query = f'{{ {root}(id: "{unknown}") {{ id }} }}'
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == expect(False, viewer, "ok"), (viewer, query, ran)  # null


async def test_pages_and_refusals_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    walks = [
        (
            "query($t: String, $n: Int, $a: String) { workflows(tag: $t, first: $n, after: $a) { totalCount"
            " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id createdAt } } } }",
            "workflows",
            ("owner", "writer", "other"),
        ),
        (
            "query($n: Int, $a: String) { files(first: $n, after: $a) { totalCount pageInfo { hasNextPage endCursor }"
            " nodes { id createdAt } } }",
            "files",
            ("owner", "other"),
        ),
        (
            'query($n: Int, $a: String) { workflow(id: "WF") { executions(first: $n, after: $a) { totalCount'
            " pageInfo { hasNextPage hasPreviousPage endCursor } nodes { id createdAt } } } }",
            "workflow",
            ("owner", "other", "writer"),
        ),
    ]
    for query, root, viewers in walks:
        query = query.replace("WF", world.workflows["own-archived"])
        for viewer in viewers:
            for size in (1, 2, 3):
                after = None
                pages = 0
                while True:
                    variables: dict[str, Any] = {"n": size, "a": after}
                    if root == "workflows":
                        variables["t"] = world.tag
                    data, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
                    assert ran == "compiled", (query, viewer, variables)
                    page = data["data"][root]
                    page = page["executions"] if root == "workflow" else page
                    pages += 1
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]
                assert pages > 1 or size > 1 or viewer == "other", (query, viewer)
    workflow = world.workflows["own-public"]
    signed_in: dict[str, str | None] = {viewer: "compiled" for viewer in VIEWERS if viewer not in ANONYMOUS}
    cases: list[tuple[str, dict[str, str | None]]] = [
        ("{ workflows(first: 501) { nodes { id } } }", {}),
        ("{ workflows(first: -1) { nodes { id } } }", {}),
        ('{ workflows(after: "bm9wZQ") { nodes { id } } }', {}),
        ('{ workflows(ownerId: "nope") { nodes { id } } }', {}),
        (f'{{ workflows(ownerId: "{uuid.uuid4()}") {{ nodes {{ id }} }} }}', dict.fromkeys(signed_in, "bail_after")),
        (
            f'{{ workflows(ownerId: "{world.ids["other"]}", tag: "{world.tag}") {{ totalCount nodes {{ id }} }} }}',
            signed_in,
        ),
        ('{ workflows(ownerId: "", isTemplate: true, isPublic: false) { totalCount nodes { id } } }', signed_in),
        ('{ workflow(id: "nope") { id } }', {}),
        (f'{{ workflow(id: "{workflow}") {{ executions(first: 501) {{ nodes {{ id }} }} }} }}', {}),
        (f'{{ workflow(id: "{workflow}") {{ executions(after: "garbage") {{ nodes {{ id }} }} }} }}', {}),
        (
            f'{{ workflow(id: "{workflow}") {{ versions(last: 501) {{ version }} }} }}',
            dict.fromkeys(signed_in, "hybrid"),
        ),  # its error from the resolver,
        # A Python field's error inside a list: its path has the index, and null propagates as ever.
        (
            f'{{ workflows(tag: "{world.tag}", first: 20) {{ totalCount nodes {{ id versions(last: 501) {{ version }} }} }} }}',
            dict.fromkeys(signed_in, "hybrid"),
        ),
        ('{ execution(id: "nope") { id } }', {}),
        ('{ file(id: "nope") { id } }', {}),
        ("{ files(first: 501) { nodes { id } } }", {}),
        ('{ files(after: "bm9wZQ") { nodes { id } } }', {}),
    ]
    for query, outcomes in cases:
        for viewer in VIEWERS:
            data, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == outcomes.get(viewer, "bail_before"), (query, viewer, ran)
            if "versions(last: 501)" in query and "workflows(" in query and viewer == "owner":
                paths = [e["path"] for e in data["errors"]]
                assert paths[0][:3] == ["workflows", "nodes", 0] and paths[0][3] == "versions", paths
                assert data["data"] is None  # non-null all the way up, as graphql-core propagates it
    # Beside another domain's root: `vendors` never asks who calls.
    query = f'{{ b: vendors(first: 1) {{ nodes {{ id }} }} a: workflow(id: "{workflow}") {{ id name }} }}'
    for viewer in VIEWERS:
        _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
        assert ran == ("compiled+bail_before" if viewer in ANONYMOUS else "compiled"), (viewer, ran)


async def test_one_statement_for_a_nested_workflow(server: LiveServer, world: World) -> None:
    token = world.viewers["owner"]["authorization"].removeprefix("Bearer ")
    query = (
        "query($id: ID!) { workflow(id: $id) { id name tags configuration owner { name email }"
        " edges { id source target configuration } executions(first: 10) { totalCount"
        " nodes { id status input output user { id name } } } } }"
    )
    variables = {"id": world.workflows["own-archived"]}
    await server.data(query, variables, token=token)  # the caller is known from here on
    data, statements = await counted(server, query, variables, token)
    assert data["workflow"]["executions"]["totalCount"] == 2
    assert len(data["workflow"]["edges"]) == 1
    assert statements == 1


async def test_a_users_workflows_are_what_the_caller_may_see(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    """User.workflows, under me and under a workflow's owner: the owner's live ones the caller may
    see (own, public, or all for workflows:write), each status, page after page."""
    selection = (
        "workflows(first: 2, after: $a, status: $s) { totalCount pageInfo { hasNextPage endCursor }"
        " nodes { id name isPublic status } }"
    )
    for root in ("me", f'workflow(id: "{world.workflows["own-public"]}") {{ owner'):
        closing = " }" if root.startswith("workflow") else ""
        query = f"query($a: String, $s: WorkflowStatus) {{ {root} {{ {selection} }}{closing} }}"
        for viewer in VIEWERS:
            for status in (None, "DRAFT", "PUBLISHED"):
                after = None
                for _ in range(10):
                    data, ran = await compare(
                        server, resolver_server, query, {"a": after, "s": status}, world.viewers[viewer]
                    )
                    if viewer in ANONYMOUS:  # me: null for them (a bad token is refused); a workflow: refused
                        signed_out_me = root == "me" and viewer != "badtoken"
                        assert ran == ("compiled" if signed_out_me else "bail_before"), (viewer, root, ran)
                        break
                    assert ran == "compiled", (viewer, root, status, ran)
                    holder = data["data"]["me"] if root == "me" else data["data"]["workflow"]["owner"]
                    page = holder["workflows"]
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]


async def test_a_row_that_does_not_decode_hands_the_root_to_the_resolvers(
    server: LiveServer, resolver_server: LiveServer
) -> None:
    """A hybrid answer carries whole rows: a number no double holds in a column nobody selected
    must not fail the request. The resolvers answer instead."""
    from sqlalchemy import text

    from tests.support import new_user

    token = await new_user(server)
    created = await server.data('mutation { createWorkflow(input: {name: "big"}) { id } }', token=token)
    workflow = created["createWorkflow"]["id"]
    async with server.deps.db.session() as session:  # written by another program: jsonb holds any numeric
        await session.execute(
            text("""UPDATE workflows SET configuration = '{"x": 1e400}'::jsonb WHERE id = :id"""), {"id": workflow}
        )
        await session.commit()
    query = "query($id: ID!) { workflow(id: $id) { id name versions { version } } }"
    data, ran = await compare(server, resolver_server, query, {"id": workflow}, {"authorization": f"Bearer {token}"})
    # Whatever the resolvers make of it (today: an error at the field, the request answered), the
    # compiled server says the same instead of failing the whole request.
    assert data["errors"][0]["path"] == ["workflow"], data
    assert ran == "bail_after", ran
