"""What the fuzzer sends: hypothesis strategies for the custom scalars (real values from the Pools mixed with
random ones and junk), and the second pass over each generated document (Rewriter, rewrite) that swaps values for
plausible ones by argument name and hoists arguments into variables."""

from __future__ import annotations

import base64
import collections
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import graphql
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    ListTypeNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectFieldNode,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    TypeNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
)
from hypothesis import strategies as st
from hypothesis_graphql import nodes

PASSWORD = "fuzzing passphrase 42"  # every persona's, and what `password` arguments are given

# ID arguments and input fields whose name says what they point at.
ID_NAMES = {
    "userId": "User",
    "ownerId": "User",
    "roleId": "Role",
    "projectId": "Project",
    "apiKeyId": "ApiKey",
    "clientId": "Client",
    "serviceId": "Service",
    "environmentId": "Environment",
    "reservationId": "Reservation",
    "startPoint": "RequestLog",
    "guildId": "Guild",
    "conversationId": "ChatConversation",
    "workflowId": "Workflow",
    "executionId": "Execution",
    "vendorId": "Vendor",
}
VERBS = re.compile(r"^(create|update|delete|remove|revoke|restore|publish|archive|cancel|register|record|add|upsert)")
JUNK_IDS = [
    "",
    " ",
    "0",
    "-1",
    "null",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-an-id",
    "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "12345678123456781234567812345678",
    "12345678-1234-5678-1234-56781234567",
    "' OR 1=1 --",
    "x" * 300,
]
SPECIAL_STRINGS = [
    "",
    " ",
    "a",
    "*",
    "users:admin",
    "gateway:admin",
    "owner",
    "admin",
    "member",
    "active",
    "cancelled",
    "expired",
    "stripe",
    "revenuecat",
    "https://example.com/a.png",
    "text/plain",
    "%",
    "_",
    "\\",
    "'",
    '"',
    "null",
    "é",
    "\u202e",
    "😀",
    "\U0001d518\U0001d52b",  # outside the BMP
    "\ud7ff",
    "\x00",
    "a\x00b",
    "' OR 1=1 --",
    "<script>",
    "2026-01-01T00:00:00Z",
    "x" * 256,
    "x" * 5000,
    "x" * 300_000,
]
DATETIME_JUNK = [
    "",
    "now",
    "2026-13-01T00:00:00Z",
    "2026-02-30",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-01-01",
    "2026-01-01T00:00:00+24:00",
    "1970-01-01T00:00:00Z",
    "+002026-01-01T00:00:00",
    "2026-W01",
]
SMART_NUMBERS: dict[str, list[Any]] = {
    "first": [0, 1, 2, 5, 50, 500, 501, -1],
    "last": [0, 1, 2, 5, 50, 500, 501, -1],
    "ttlSeconds": [1, 60, 3600, 0, -1, 2**31 - 1],
    "amount": [1, 2, 0, -1, 1_000_001],
    "availableRequests": [0, 1, 100, -1, 2**31 - 1],
    "delta": [0, 1, -1, 100, -(2**31), 2**31 - 1],
    "confidence": [0, 0.5, 1, 1.0001, -0.1],
    "minConfidence": [0, 0.5, 1, 2],
    "size": [0, 1, 1.5, 2**40, -1],
    "fileSize": [0, 100, -1, 2**31 - 1],
    "radiusKm": [0, 0.001, 1, 100, 20_000, 1e9, -1],
    "value": [0, 1.5, -1e308, 1e308],
}
COORDINATES = {"lat": 90.0, "long": 180.0, "minLat": 90.0, "maxLat": 90.0, "minLong": 180.0, "maxLong": 180.0}
SMART_LISTS: dict[str, list[list[str]]] = {
    "roles": [["owner"], ["admin"], ["member"], [], ["owner", "admin"]],
    "permissions": [["*"], ["users:admin"], ["audit:read", "gateway:admin"], [], ["nope"]],
    "tags": [["a"], ["a", "b"], [], ["x" * 300]],
}
STRING_HARVEST = {"refreshToken", "cursor", "endCursor", "startCursor", "accessToken"}


def value_node(value: Any) -> ValueNode:
    """A Python JSON value as a GraphQL literal."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([value_node(v) for v in value])
    if isinstance(value, dict):
        return nodes.Object([ObjectFieldNode(name=NameNode(value=k), value=value_node(v)) for k, v in value.items()])
    raise TypeError(type(value))


def type_node(type_: GraphQLInputType) -> TypeNode:
    if isinstance(type_, GraphQLNonNull):
        inner = type_node(type_.of_type)
        assert isinstance(inner, NamedTypeNode | ListTypeNode)
        return NonNullTypeNode(type=inner)
    if isinstance(type_, GraphQLList):
        return ListTypeNode(type=type_node(type_.of_type))
    return NamedTypeNode(name=NameNode(value=type_.name))


def named(type_: Any) -> str:
    return str(graphql.get_named_type(type_).name)


@dataclass
class Pools:
    """Real values the fuzzer mixes into generated documents; refreshed from the database and responses."""

    ids: dict[str, list[str]] = field(default_factory=dict)  # GraphQL type -> ids
    all_ids: list[str] = field(default_factory=list)
    strings: dict[str, list[str]] = field(default_factory=dict)  # purpose -> strings
    seen: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))
    harvested: dict[str, collections.deque[str]] = field(
        default_factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=200))
    )

    def any_id(self, index: int) -> str:
        total = len(self.all_ids) + len(self.seen)
        if total == 0:
            return "00000000-0000-0000-0000-000000000000"
        index %= total
        return self.all_ids[index] if index < len(self.all_ids) else self.seen[index - len(self.all_ids)]

    def any_string(self, index: int) -> str:
        flat = [s for values in self.strings.values() for s in values]
        for values in self.harvested.values():
            flat.extend(values)
        flat.extend(SPECIAL_STRINGS)
        return flat[index % len(flat)]

    def harvest(self, value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.harvest(v, k)
        elif isinstance(value, list):
            for v in value:
                self.harvest(v, key)
        elif isinstance(value, str):
            if key == "id" or key.endswith("Id"):
                self.seen.append(value)
            elif key in STRING_HARVEST:
                self.harvested["cursor" if "ursor" in key else key].append(value)


def scalar_strategies(pools: Pools) -> dict[str, st.SearchStrategy[ValueNode]]:
    """Custom scalars (and the built-in String and ID, overridden to mix in real values)."""
    alphabet = st.characters(codec="utf-8", min_codepoint=0, max_codepoint=0xFFFF, exclude_categories=["Cs"])
    index = st.integers(min_value=0, max_value=2**20)
    real_id = index.map(pools.any_id)
    ids: st.SearchStrategy[ValueNode] = st.one_of(
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        st.uuids().map(nodes.String),
        st.sampled_from(JUNK_IDS).map(nodes.String),
        st.text(alphabet=alphabet, max_size=40).map(nodes.String),
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    )
    strings: st.SearchStrategy[ValueNode] = st.one_of(
        st.text(alphabet=alphabet).map(nodes.String),
        st.text(alphabet=alphabet).map(nodes.String),
        index.map(pools.any_string).map(nodes.String),
    )
    offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-12))])
    moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=cast(Any, offsets))
    datetimes: st.SearchStrategy[ValueNode] = st.one_of(
        moments.map(lambda d: nodes.String(d.isoformat())),
        moments.map(lambda d: nodes.String(d.isoformat())),
        moments.map(lambda d: nodes.String(d.isoformat())),
        st.sampled_from(DATETIME_JUNK).map(nodes.String),
        st.text(alphabet=alphabet, max_size=30).map(nodes.String),
        st.integers().map(nodes.Int),
    )
    keys = st.one_of(
        st.sampled_from(["features", "chatBot", "clubAnalytics", "a", "b", "_", "nested"]),
        st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,8}", fullmatch=True),
    )
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=alphabet, max_size=20),
    )
    json_values = st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=12,
    )
    return {
        "ID": ids,
        "String": strings,
        "DateTime": datetimes,
        "JSON": json_values.map(value_node),
    }


class Rewriter(Visitor):
    """Second pass over a generated document (driven by a Random that hypothesis seeds).

    Swaps some values for plausible ones by argument name (a real id of the right type, a real service
    name or node key, an in-range coordinate, a small page size), so that resolvers get past input
    checks more often; then optionally hoists every argument into a variable."""

    def __init__(self, type_info: TypeInfo, rng: random.Random, pools: Pools, hoist: bool) -> None:
        super().__init__()
        self.type_info = type_info
        self.rng = rng
        self.pools = pools
        self.hoist = hoist
        self.fields: list[str] = []
        self.definitions: list[VariableDefinitionNode] = []
        self.variables: dict[str, Any] = {}

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.append(node.name.value)

    def leave_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.pop()

    def enter_argument(self, node: ArgumentNode, *_: Any) -> ArgumentNode | None:
        value = self.smart(node.name.value, self.type_info.get_input_type())
        return None if value is None else ArgumentNode(name=node.name, value=value)

    def enter_object_field(self, node: ObjectFieldNode, *_: Any) -> ObjectFieldNode | None:
        value = self.smart(node.name.value, self.type_info.get_input_type())
        return None if value is None else ObjectFieldNode(name=node.name, value=value)

    def leave_argument(self, node: ArgumentNode, *_: Any) -> ArgumentNode | None:
        argument = self.type_info.get_argument()
        if not self.hoist or argument is None or isinstance(node.value, VariableNode):
            return None
        name = f"v{len(self.definitions)}"
        variable = VariableNode(name=NameNode(value=name))
        self.variables[name] = graphql.value_from_ast_untyped(node.value)
        self.definitions.append(VariableDefinitionNode(variable=variable, type=type_node(argument.type)))
        return ArgumentNode(name=node.name, value=variable)

    def smart(self, name: str, type_: GraphQLInputType | None) -> ValueNode | None:
        if type_ is None or self.rng.random() < 0.5:
            return None
        kind = named(type_)
        listed = isinstance(graphql.get_nullable_type(type_), GraphQLList)
        rng = self.rng
        if kind == "ID" and not listed:
            target = ID_NAMES.get(name) or (self.id_target() if name == "id" else None)
            pool = self.pools.ids.get(target or "") or []
            return nodes.String(rng.choice(pool)) if pool else None
        if kind == "String" and listed and name in SMART_LISTS:
            return value_node(rng.choice(SMART_LISTS[name]))
        if kind == "String" and not listed:
            purpose = {
                "service": "service",
                "email": "email",
                "key": "node_key",
                "source": "node_key",
                "target": "node_key",
                "discordId": "discord_id",
                "externalId": "external_id",
                "refreshToken": "refreshToken",
                "after": "cursor",
                "before": "cursor",
            }.get(name)
            if name in ("password", "currentPassword"):
                return nodes.String(PASSWORD)
            if name == "status":
                return nodes.String(rng.choice(["active", "cancelled", "expired"]))
            if purpose is None:
                return None
            if purpose == "email" and rng.random() < 0.5:
                return nodes.String(f"fuzz-{rng.getrandbits(40):x}@example.com")
            values = list(self.pools.strings.get(purpose, [])) + list(self.pools.harvested.get(purpose, []))
            if purpose == "cursor" and values and rng.random() < 0.3:
                return nodes.String(mutate_cursor(rng, rng.choice(values)))
            return nodes.String(rng.choice(values)) if values else None
        if kind in ("Int", "Float") and not listed:
            if name in COORDINATES:
                bound = COORDINATES[name]
                choice = rng.choice([rng.uniform(-bound, bound), bound, -bound, bound + 1e-9])
                return nodes.Float(choice)
            if name in SMART_NUMBERS:
                number = rng.choice(SMART_NUMBERS[name])
                if kind == "Int" and isinstance(number, float):
                    number = int(number)
                return nodes.Int(number) if isinstance(number, int) else nodes.Float(number)
        return None

    def id_target(self) -> str | None:
        """The type an `id` argument names, from its field: deleteSession -> Session."""
        if not self.fields:
            return None
        field_name = self.fields[-1]
        if field_name == "conversation":
            return "ChatConversation"
        stem = VERBS.sub("", field_name)
        stem = stem[:1].upper() + stem[1:]
        matches = [t for t in self.pools.ids if stem.startswith(t)]
        return max(matches, key=len) if matches else None


def mutate_cursor(rng: random.Random, cursor: str) -> str:
    """A cursor of a real kind with a value that is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        raw = "x:1"
    kind = raw.partition(":")[0]
    value = rng.choice(
        [
            "",
            "-1",
            str(2**63),
            "99999999999999999999999",
            "x",
            "2026-01-01T00:00:00+00:00|not-a-uuid",
            "9999-12-31T23:59:59+00:00|" + str(uuid.UUID(int=0)),
            "0001-01-01T00:00:00+05:00|" + str(uuid.UUID(int=0)),
            "2026-01-01T00:00:00|",
            "|",
            "[]",
            '["NEWEST"]',
            '["MOST_CONFIDENT", "x", "y"]',
            '["NEWEST", "2026-01-01T00:00:00+00:00", "not-a-uuid"]',
            "{}",
            "null",
            "\x00",
        ]
    )
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def rewrite(
    document: DocumentNode, schema: GraphQLSchema, rng: random.Random, pools: Pools, hoist: bool
) -> tuple[str, dict[str, Any]]:
    type_info = TypeInfo(schema)
    rewriter = Rewriter(type_info, rng, pools, hoist)
    edited = graphql.visit(document, TypeInfoVisitor(type_info, rewriter))
    assert isinstance(edited, DocumentNode)
    if rewriter.definitions:
        op = edited.definitions[0]
        assert isinstance(op, OperationDefinitionNode)
        op = OperationDefinitionNode(
            operation=op.operation,
            name=op.name,
            variable_definitions=tuple(rewriter.definitions),
            directives=op.directives,
            selection_set=op.selection_set,
        )
        edited = DocumentNode(definitions=(op,))
    variables = rewriter.variables
    if variables and rng.random() < 0.1:
        # A variable of the wrong shape: coercion has to refuse it cleanly.
        victim = rng.choice(sorted(variables))
        variables[victim] = rng.choice([None, "x", 2**40, [], {}, True, 1.5, "2026-01-01", [None], {"a": 1}])
    return graphql.print_ast(edited), variables
