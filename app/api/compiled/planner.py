"""Plan a root field's selection once per document; render it per request as one SQL statement
whose single value is the field's JSON text, byte for byte what the resolver path would write.

The plan follows graphql-core's own field collection (fragments merged, response keys in the
executor's order). Rendering binds the request's arguments: a value the resolver would refuse (a
page size out of range, a malformed cursor or id) raises `Bail`, and the resolver path answers
instead, errors included. Inside the statement, anything the resolver path would report as an
error (a null in a non-null field, NaN, an Int beyond 32 bits, a guard that fails) is written as
the JSON string "\\u0000", which no data can produce (PostgreSQL text cannot hold U+0000): its
presence in the text hands the field to the resolver path too. See docs/compiled-reads.md.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    get_named_type,
    is_non_null_type,
    is_object_type,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values
from sqlalchemy import ARRAY, JSON
from sqlalchemy import Column as SAColumn
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import INET, JSONB

from app.api.compiled.declare import (
    ROOTS,
    TYPES,
    ById,
    ByViewer,
    Children,
    Col,
    Connection,
    Event,
    Expr,
    Lookup,
    ManyToOne,
    Masked,
    Rows,
    Rule,
    TableDecl,
    literal,
    relations_of,
)
from app.api.compiled.hybrid import convertible as hybrid_convertible
from app.api.errors import LodgeError
from app.api.pagination import page_size

log = logging.getLogger("lodge.plans")
DEFINITION = "strawberry-definition"
# The JSON string "\u0000" as an SQL literal, and as it appears in the text: the bail marker.
B = "'\"\\u0000\"'"
MARKER = '"\\u0000"'
# PostgreSQL functions take at most 100 arguments: longer concat() calls are nested.
MAX_CONCAT = 90
NO_VARIABLES = VariableValues({}, {})
DIALECT: Any = postgresql.dialect()  # type: ignore[no-untyped-call]
ROW_INFO = ("hasNextPage", "startCursor", "endCursor")


class Unsupported(Exception):
    """This selection does not compile: its root field keeps the resolver path."""


class Bail(Exception):
    """This request's arguments are not plain: the resolver path answers (and words any error)."""


# -- SQL text helpers -----------------------------------------------------------------------------


def concat(parts: list[str]) -> str:
    merged: list[str] = []
    for part in parts:  # adjacent literals become one
        if merged and part.startswith("'") and merged[-1].startswith("'") and _is_literal(part, merged[-1]):
            merged[-1] = merged[-1][:-1] + part[1:]
        else:
            merged.append(part)
    while len(merged) > MAX_CONCAT:
        merged = [f"concat({', '.join(merged[i : i + MAX_CONCAT])})" for i in range(0, len(merged), MAX_CONCAT)]
    return merged[0] if len(merged) == 1 and merged[0].startswith("'") else f"concat({', '.join(merged)})"


def _is_literal(*parts: str) -> bool:
    # A literal is '...' with no unescaped quote inside; expressions never start with a quote here.
    return all(p.endswith("'") and "'" not in p[1:-1].replace("''", "") for p in parts)


def guarded(condition: str, value: str) -> str:
    """`value` where `condition` holds, else the bail marker (the resolver's error)."""
    return f"CASE WHEN {condition} THEN {value} ELSE {B} END"


def json_object(entries: list[tuple[str, str]]) -> str:
    """The JSON object text of (response key, JSON text expression) pairs, in order. Keys are
    GraphQL names or aliases ([_A-Za-z][_0-9A-Za-z]*): nothing to escape."""
    parts: list[str] = []
    for i, (key, value) in enumerate(entries):
        parts.append(literal(("{" if i == 0 else ",") + f'"{key}":'))
        parts.append(value)
    parts.append(literal("}"))
    return concat(parts)


def scalar(named: str, python_type: Any, non_null: bool) -> Callable[[str], str]:
    """The encoder of a column read as a GraphQL scalar: its JSON text as orjson writes the value
    the resolver path holds (tests/api/test_compiled_encode.py)."""
    core: Callable[[str], str]
    if named == "ID" and python_type is uuid.UUID:
        core = lambda e: f"('\"' || {e}::text || '\"')"  # noqa: E731
    elif named in ("ID", "String") and python_type is str:
        core = lambda e: f"to_json({e})::text"  # noqa: E731
    elif named == "Boolean" and python_type is bool:
        core = lambda e: f"{e}::text"  # noqa: E731
    elif named == "Int" and python_type is int:
        core = lambda e: f"CASE WHEN {e} BETWEEN -2147483648 AND 2147483647 THEN {e}::text END"  # noqa: E731
    elif named == "Float" and python_type in (float, int):
        core = lambda e: f"lodge_float({e}::float8)"  # noqa: E731
    elif named == "DateTime" and python_type is datetime:
        core = lambda e: f"('\"' || lodge_ts({e}) || '\"')"  # noqa: E731
    elif named == "JSON" and python_type in (dict, list, object):
        # A JSON null is None in Python: null for a nullable field, an error for a non-null one.
        core = lambda e: f"CASE WHEN jsonb_typeof({e}) <> 'null' THEN lodge_json({e}) END"  # noqa: E731
        if not non_null:
            return lambda e: f"COALESCE({core(e)}, 'null')"
    else:
        raise Unsupported(f"no encoder for {named} from {python_type}")
    if non_null:
        return lambda e: f"COALESCE({core(e)}, {B})"
    return lambda e: f"CASE WHEN {e} IS NULL THEN 'null' ELSE COALESCE({core(e)}, {B}) END"


def encoder(type_: GraphQLOutputType, column: Any) -> Callable[[str], str]:
    """The encoder of a column read as the GraphQL type `type_`: a scalar, an enum (its stored
    value to its name), or a list of strings (from text[] or a jsonb array)."""
    non_null = is_non_null_type(type_)
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    core: Callable[[str], str]
    if isinstance(inner, GraphQLList):
        item = inner.of_type
        if not is_non_null_type(item) or get_named_type(item).name != "String":
            raise Unsupported(f"no encoder for {inner}")
        if isinstance(column.type, ARRAY):
            core = lambda e: (  # noqa: E731
                f"CASE WHEN {e} IS NOT NULL THEN (SELECT '[' || COALESCE(string_agg(COALESCE(to_json(x)::text, {B}), "
                f"',' ORDER BY o), '') || ']' FROM unnest({e}) WITH ORDINALITY u(x, o)) END"
            )
        elif isinstance(column.type, JSONB):
            # Strings only: graphql-core would turn a number into a string, or refuse an object.
            core = lambda e: (  # noqa: E731
                f"CASE WHEN jsonb_typeof({e}) = 'array' AND NOT jsonb_path_exists({e}, "
                f"'$[*] ? (@.type() != \"string\")') THEN lodge_json({e}) END"
            )
        else:
            raise Unsupported(f"no encoder for {inner} from {column.type}")
    elif isinstance(column.type, INET) and get_named_type(inner).name == "String":
        # str() of the address asyncpg gives: PostgreSQL's host() for a single address, except an
        # IPv6 address written with a dotted tail (Python 3.11 prints it in hex) or a network with
        # a mask (Python prints the mask): those go to the resolver.
        core = lambda e: (  # noqa: E731
            f"CASE WHEN masklen({e}) = CASE family({e}) WHEN 4 THEN 32 ELSE 128 END "
            f"AND (family({e}) = 4 OR host({e}) NOT LIKE '%.%') THEN to_json(host({e}))::text END"
        )
    elif isinstance(inner, GraphQLEnumType):
        cases = " ".join(
            f"WHEN {literal(str(value.value))} THEN {literal(json.dumps(name))}" for name, value in inner.values.items()
        )
        core = lambda e: f"CASE {e} {cases} END"  # noqa: E731
    else:
        return scalar(get_named_type(inner).name, _python_type(column), non_null)
    if non_null:
        return lambda e: f"COALESCE({core(e)}, {B})"
    return lambda e: f"CASE WHEN {e} IS NULL THEN 'null' ELSE COALESCE({core(e)}, {B}) END"


def _python_type(column: Any) -> Any:
    try:
        return column.type.python_type
    except NotImplementedError:
        return object


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- per request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is asking, as far as a plan needs to know (None: not that kind of caller)."""

    user_id: uuid.UUID | None = None
    key_environment: uuid.UUID | None = None  # an API key confined to one environment
    key_project: uuid.UUID | None = None  # an API key's project


NOBODY = Caller()


class Render:
    """One request's rendering: its variables, its caller, the parameters bound so far."""

    def __init__(self, variables: VariableValues, caller: Caller, event: Any = None) -> None:
        self.variables = variables
        self.caller = caller
        self.event = event  # the row of a subscription's event
        self.params: list[Any] = []
        self._caller_params: dict[str, str] = {}
        self._aliases = 0

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def lazy(self, value: Any) -> Lazy:
        """A parameter numbered when first written into the statement: one that a selection does
        not use is never sent (PostgreSQL cannot type a parameter it never sees)."""
        return Lazy(self, value)

    def _of_caller(self, name: str) -> str:
        """A parameter holding one of the caller's ids, bound once per statement."""
        if name not in self._caller_params:
            self._caller_params[name] = self.param(getattr(self.caller, name)) + "::uuid"
        return self._caller_params[name]

    @property
    def user(self) -> str:
        """The caller's user id (NULL for anonymous callers and API keys)."""
        return self._of_caller("user_id")

    @property
    def key_project(self) -> str:
        """The project of the API key calling (NULL: not an API key)."""
        return self._of_caller("key_project")

    @property
    def key_environment(self) -> str:
        """The environment an API key is confined to (NULL: not such a key)."""
        return self._of_caller("key_environment")

    def alias(self) -> str:
        self._aliases += 1
        return f"t{self._aliases}"

    def args(self, field_def: GraphQLField, node: FieldNode) -> dict[str, Any]:
        try:
            return get_argument_values(field_def, node, self.variables)
        except Exception as exc:  # graphql-core words it: the resolver path reports it
            raise Bail from exc


class Lazy:
    def __init__(self, render: Render, value: Any) -> None:
        self.render = render
        self.value = value
        self.text: str | None = None

    def __format__(self, spec: str) -> str:
        if self.text is None:
            self.text = self.render.param(self.value)
        return self.text

    __str__ = lambda self: self.__format__("")  # noqa: E731

    def part(self, value: Any) -> Lazy:
        """Another parameter of the same statement (for a filter made of an input object's members)."""
        return Lazy(self.render, value)


# -- plans ----------------------------------------------------------------------------------------


@dataclass
class Column:
    column: str
    encode: Callable[[str], str]
    expr: Callable[[str], str] | None = None

    def render(self, r: Render, row: str) -> str:
        value = f"{row}.{self.column}"
        return self.encode(self.expr(value) if self.expr is not None else value)


@dataclass
class Computed:
    sql: Callable[[str], str]
    encode: Callable[[str], str]

    def render(self, r: Render, row: str) -> str:
        return self.encode(self.sql(row))


@dataclass
class MaskedColumn:
    column: str
    encode: Callable[[str], str]
    rule: Rule

    def render(self, r: Render, row: str) -> str:
        return f"CASE WHEN {self.rule.sql(row, r)} THEN {self.encode(f'{row}.{self.column}')} ELSE 'null' END"


@dataclass
class Constant:
    text: str

    def render(self, r: Render, row: str) -> str:
        return self.text


class Hole:
    """A field that needs Python (a resolver, permission classes, a field extension): the statement
    leaves it out, and its object carries its row under ROW_KEY for the resolver (hybrid plans)."""


HOLE = Hole()
# The key under which an object with holes carries its row, followed by its type's name: no data
# can write it (PostgreSQL text cannot hold U+0000), and it never reaches a client (hybrid.tree
# strips it).
ROW_KEY = "\\u0000"  # as written in the JSON text; "\x00" once decoded


@dataclass
class ObjectPlan:
    decl: TableDecl
    fields: list[tuple[str, Any]]  # (response key, Column | Constant | ConnectionPlan | ManyToOnePlan | Hole)

    @property
    def has_holes(self) -> bool:
        return any(plan is HOLE for _, plan in self.fields)

    def render(self, r: Render, row: str) -> str:
        entries = [(key, plan.render(r, row)) for key, plan in self.fields if plan is not HOLE]
        if self.has_holes:  # the key names the type: its source is built as the answer is decoded
            entries.append((ROW_KEY + self.decl.name, f"to_json({row})::text"))
        return json_object(entries)


@dataclass
class ManyToOnePlan:
    target: ObjectPlan
    key: str
    non_null: bool
    decl: ManyToOne

    def render(self, r: Render, row: str) -> str:
        decl = self.decl
        x = r.alias()
        where = f"{x}.id = {row}.{self.key}"
        if decl.where is not None:
            where += f" AND {decl.where(x)}"
        if decl.visible is not None:
            where += f" AND {decl.visible.sql(x, r)}"
        value = self.target.render(r, x)
        if decl.guard is not None:
            value = guarded(decl.guard.sql(x, r), value)
        found = f"(SELECT {value} FROM {self.target.decl.table} {x} WHERE {where})"
        return f"COALESCE({found}, {B if self.non_null or decl.required else literal('null')})"


@dataclass
class ChildrenPlan:
    decl: Children
    target: ObjectPlan

    def render(self, r: Render, row: str) -> str:
        decl = self.decl
        x = r.alias()
        if decl.via is not None:
            table, parent_column, child_column = decl.via
            conditions = [
                f"{x}.id IN (SELECT {_quote(child_column)} FROM {table} WHERE {_quote(parent_column)} = "
                f"{row}.{_quote(decl.parent_key)})"
            ]
        else:
            conditions = [f"{x}.{_quote(decl.child_key)} = {row}.{_quote(decl.parent_key)}"]
        if decl.where is not None:
            conditions.append(decl.where(x))
        if decl.visible is not None:
            conditions.append(decl.visible.sql(row, r))
        if decl.filter is not None:
            conditions.append(decl.filter.sql(x, r))
        items = f"string_agg({self.target.render(r, x)}, ',' ORDER BY {decl.order(x)})"
        where = " AND ".join(conditions)
        found = f"(SELECT '[' || COALESCE({items}, '') || ']' FROM {self.target.decl.table} {x} WHERE {where})"
        if decl.guard is not None:
            return guarded(decl.guard.sql(row, r), found)
        return found


@dataclass
class ConnectionPlan:
    decl: Connection
    target: TableDecl
    field_def: GraphQLField
    node: FieldNode
    # (response key, part): part is ("nodes", ObjectPlan), ("edges", [(key, edge part)]),
    # ("pageInfo", [(key, name)]), ("totalCount", None) or ("const", text)
    parts: list[tuple[str, tuple[str, Any]]]
    info_names: frozenset[str]  # the pageInfo fields selected
    reads_rows: bool  # nodes, edges, a cursor or hasNextPage is selected

    def render(self, r: Render, parent: str | None) -> str:
        args = r.args(self.field_def, self.node)
        decl = self.decl
        after, before = args.get("after"), args.get("before")
        backwards = args.get("last") is not None  # read from the end, as build_connection(backwards=True)
        try:
            size = page_size(args.get("first"), args.get("last"))
            start = decl.order.decode(decl.order.kind, after)
            end = decl.order.decode(decl.order.kind, before)
            bound = []
            defaulted = []
            for name, spec in decl.filters.items():
                value = args.get(name)
                if value is None or (spec.truthy and not value):
                    if spec.default_to_viewer:
                        defaulted.append(spec)  # the caller's own: no guard to pass
                    continue
                bound.append((spec, r.lazy(spec.bind(value))))
        except LodgeError as exc:
            raise Bail from exc
        table = self.target.table
        a = r.alias()

        def where(alias: str, *, page: bool) -> str:
            conditions = []
            if decl.child_key is not None:
                assert parent is not None
                conditions.append(f"{alias}.{_quote(decl.child_key)} = {parent}.{_quote(decl.parent_key)}")
            if decl.where is not None:
                conditions.append(decl.where(alias))
            conditions.extend(spec.sql(alias, placeholder) for spec, placeholder in bound)
            conditions.extend(spec.sql(alias, r.user) for spec in defaulted)
            if decl.visible is not None and parent is not None:
                conditions.append(decl.visible.sql(parent, r))
            if decl.filter is not None:
                conditions.append(decl.filter.sql(alias, r))
            if page and start is not None:
                conditions.append(decl.order.after(alias, start, r.lazy))
            if page and end is not None:
                conditions.append(decl.order.after(alias, end, r.lazy, before=True))
            return " AND ".join(conditions) or "true"

        # The page is read in the order of reading (from the end when backwards) and written in
        # the connection's order; one row more says whether there is more in the reading direction.
        order = decl.order.order(a, reverse=backwards)
        more = "hasPreviousPage" if backwards else "hasNextPage"
        needs_more = more in self.info_names
        reads_rows = self.reads_rows or needs_more
        limit = _size(r, size + 1 if needs_more else size)
        size_sql = _size(r, size)
        within = f" FILTER (WHERE {a}.lodge_rn <= {size_sql})" if needs_more else ""
        written, reversed_ = ("DESC", "") if backwards else ("", "DESC")
        cursor = f"COALESCE({decl.order.cursor(a)}, '\\u0000')"  # a cursor that cannot be written bails

        def given(flag: bool) -> str:
            """A page flag that says an argument was given (after: hasPreviousPage; before, when
            backwards: hasNextPage); false when the relation is hidden."""
            if not flag:
                return "'false'"
            if decl.visible is None or parent is None:
                return "'true'"
            return f"CASE WHEN {decl.visible.sql(parent, r)} THEN 'true' ELSE 'false' END"

        def has_more() -> str:  # built only if selected: a size parameter must not be sent unused
            return f"CASE WHEN count(*) > {size_sql} THEN 'true' ELSE 'false' END"

        entries: list[tuple[str, str]] = []
        for key, (kind, spec) in self.parts:
            if kind == "nodes":
                entries.append((key, _list(spec.render(r, a), a, within, written)))
            elif kind == "edges":
                edge = []
                for edge_key, (edge_kind, edge_spec) in spec:
                    if edge_kind == "cursor":
                        edge.append((edge_key, f"('\"' || {cursor} || '\"')"))
                    elif edge_kind == "node":
                        edge.append((edge_key, edge_spec.render(r, a)))
                    else:
                        edge.append((edge_key, edge_spec))
                entries.append((key, _list(json_object(edge), a, within, written)))
            elif kind == "pageInfo":
                info = []
                for info_key, name in spec:
                    if name == "hasNextPage":
                        value = given(before is not None) if backwards else has_more()
                    elif name == "hasPreviousPage":
                        value = has_more() if backwards else given(after is not None)
                    elif name == "startCursor":
                        value = _quoted_or_null(f"(array_agg({cursor} ORDER BY {a}.lodge_rn {written}){within})[1]")
                    elif name == "endCursor":
                        value = _quoted_or_null(f"(array_agg({cursor} ORDER BY {a}.lodge_rn {reversed_}){within})[1]")
                    else:
                        value = name  # a constant (__typename)
                    info.append((info_key, value))
                entries.append((key, json_object(info)))
            elif kind == "totalCount":
                x = r.alias()
                count = f"(SELECT count(*) FROM {table} {x} WHERE {where(x, page=False)})"
                entries.append((key, f"(SELECT CASE WHEN n > 2147483647 THEN {B} ELSE n::text END FROM {count} c(n))"))
            else:
                entries.append((key, spec))
        # One row, even over no rows (an empty grouping set); the page is read only when something
        # selected reads its rows.
        body = f"SELECT {json_object(entries)}"
        if reads_rows:
            body += (
                f" FROM (SELECT {a}.*, row_number() OVER (ORDER BY {order}) AS lodge_rn FROM {table} {a} "
                f"WHERE {where(a, page=True)} ORDER BY {order} LIMIT {limit}) {a} GROUP BY ()"
            )
        guards = [spec.guard(placeholder) for spec, placeholder in bound if spec.guard is not None]
        guards += [spec.access(placeholder, r) for spec, placeholder in bound if spec.access is not None]
        if decl.guard is not None:
            guards.insert(0, decl.guard.sql_of(None, r) if parent is None else decl.guard.sql(parent, r))
        if guards:
            body = f"SELECT {guarded(' AND '.join(guards), f'({body})')}"
        return f"({body})" if parent is not None else body


# Common page sizes (and one more) are written into the statement: with only ids and the like as
# parameters, PostgreSQL reuses one plan per shape instead of planning each request (a LIMIT $n
# plan must assume any size). Any other size is a parameter, so that a client cycling through
# sizes cannot fill each connection's statement cache.
LITERAL_SIZES = frozenset({*range(12), 20, 21, 25, 26, 30, 31, 50, 51, 100, 101, 200, 201, 500, 501})


def _size(r: Render, n: int) -> Any:
    if n in LITERAL_SIZES:
        return str(n)
    parameter = r.lazy(n)
    return _Cast(parameter, "int")


class _Cast:
    """A parameter with its cast, numbered (as `Lazy`) only once written."""

    def __init__(self, parameter: Lazy, cast: str) -> None:
        self.parameter, self.cast = parameter, cast

    def __format__(self, spec: str) -> str:
        return f"{self.parameter}::{self.cast}"


def _quoted_or_null(text: str) -> str:
    return f"COALESCE('\"' || {text} || '\"', 'null')"


def _list(item: str, row: str, within: str, written: str = "") -> str:
    return f"('[' || COALESCE(string_agg({item}, ',' ORDER BY {row}.lodge_rn {written}){within}, '') || ']')"


def _one_row(r: Render, target: ObjectPlan, where: Callable[[str], str], row_guard: Rule | None) -> str:
    """The JSON of the one row `where(alias)` finds, or null; a row `row_guard` refuses bails."""
    x = r.alias()
    value = target.render(r, x)
    if row_guard is not None:
        value = guarded(row_guard.sql(x, r), value)
    return f"COALESCE((SELECT {value} FROM {target.decl.table} {x} WHERE {where(x)}), 'null')"


@dataclass
class ByIdPlan:
    decl: ById
    target: ObjectPlan
    field_def: GraphQLField
    node: FieldNode

    def render(self, r: Render, parent: str | None) -> str:
        args = r.args(self.field_def, self.node)
        try:
            key = self.decl.bind(args[self.decl.arg])
        except LodgeError as exc:
            raise Bail from exc
        placeholder = r.param(key)
        extra = self.decl.where
        answer = _one_row(
            r,
            self.target,
            lambda x: f"{x}.id = {placeholder}::uuid" + (f" AND {extra(x)}" if extra is not None else ""),
            self.decl.row_guard,
        )
        if self.decl.guard is not None:
            answer = guarded(self.decl.guard.sql_of(f"{placeholder}::uuid", r), answer)
        return f"SELECT {answer}"


@dataclass
class LookupPlan:
    decl: Lookup
    target: ObjectPlan
    field_def: GraphQLField
    node: FieldNode

    def render(self, r: Render, parent: str | None) -> str:
        decl = self.decl
        args = r.args(self.field_def, self.node)
        given = {arg: column for arg, column in decl.keys.items() if args.get(arg) is not None}
        if decl.one_of and len(given) != 1:
            raise Bail
        try:
            values = {arg: decl.bind.get(arg, lambda value: value)(args[arg]) for arg in given}
        except LodgeError as exc:
            raise Bail from exc
        answer = _one_row(
            r,
            self.target,
            lambda x: " AND ".join(f"{x}.{_quote(column)} = {r.param(values[arg])}" for arg, column in given.items()),
            decl.row_guard,
        )
        if self.decl.guard is not None:
            answer = guarded(self.decl.guard.sql_of(None, r), answer)
        return f"SELECT {answer}"


@dataclass
class ByViewerPlan:
    decl: ByViewer
    target: ObjectPlan

    def render(self, r: Render, parent: str | None) -> str:
        extra = self.decl.where
        where = lambda x: f"{x}.id = {r.user}" + (f" AND {extra(x)}" if extra is not None else "")  # noqa: E731
        return f"SELECT {_one_row(r, self.target, where, None)}"


@dataclass
class EventPlan:
    target: ObjectPlan
    columns: list[tuple[str, str, str, bool]]  # (attribute, column, SQL type, JSON)

    def render(self, r: Render, parent: str | None) -> str:
        row = r.event
        if row is None:
            raise Bail
        values = []
        for attribute, column, sql_type, is_json in self.columns:
            value = getattr(row, attribute)
            if is_json and value is not None:
                values.append(f"{r.param(json.dumps(value))}::text::jsonb AS {_quote(column)}")
            else:
                values.append(f"{r.param(value)}::{sql_type} AS {_quote(column)}")
        x = r.alias()
        return f"SELECT {self.target.render(r, x)} FROM (SELECT {', '.join(values)}) {x}"


def _reads_database(plan: Any) -> bool:
    """Whether an object plan reaches another table (else the event renders without a statement)."""
    return any(not isinstance(field, Column | Constant | Computed) for _, field in plan.fields)


@dataclass
class RowsPlan:
    decl: Rows
    target: ObjectPlan

    def render(self, r: Render, parent: str | None) -> str:
        x = r.alias()
        where = f" WHERE {self.decl.where(x)}" if self.decl.where is not None else ""
        items = f"string_agg({self.target.render(r, x)}, ',' ORDER BY {self.decl.order(x)})"
        answer = f"(SELECT '[' || COALESCE({items}, '') || ']' FROM {self.target.decl.table} {x}{where})"
        if self.decl.guard is not None:
            answer = guarded(self.decl.guard.sql_of(None, r), answer)
        return f"SELECT {answer}"


@dataclass
class RootPlan:
    """A root field compiled: `render` gives the statement and its parameters for one request."""

    key: str  # the response key
    coordinate: str  # "Query.vendors"
    source: ConnectionPlan | ByIdPlan | ByViewerPlan | RowsPlan | LookupPlan | EventPlan
    needs_viewer: bool
    signed_in: bool = False  # anonymous callers and API keys: the resolver answers (UNAUTHENTICATED)
    hybrid: bool = False  # fields need Python: the answer is decoded and completed by graphql-core
    seen: set[str] = field(default_factory=set)  # statements already logged (LODGE_LOG_PLANS)

    def render(self, variables: VariableValues, caller: Caller = NOBODY, event: Any = None) -> tuple[str, list[Any]]:
        r = Render(variables, caller, event)
        sql = self.source.render(r, None)
        return sql, r.params


# -- planning -------------------------------------------------------------------------------------


class _Planner:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues = NO_VARIABLES,
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.variables = variables  # only @skip/@include read them here
        self.fragments = _fragments(document)
        self.needs_viewer = False
        self.hybrid = False  # a field needs Python: graphql-core completes the decoded answer

    def subfields(self, parent: GraphQLObjectType, details: list[FieldDetails]) -> dict[str, list[FieldDetails]]:
        collected = collect_subfields(self.schema, self.fragments, self.variables, self.operation, parent, details)
        if collected.new_defer_usages:
            raise Unsupported("@defer")
        return collected.grouped_field_set

    def object(self, type_: GraphQLObjectType, details: list[FieldDetails]) -> ObjectPlan:
        decl = TYPES.get(type_.name)
        if decl is None:
            raise Unsupported(f"{type_.name} is not declared")
        fields: list[tuple[str, Any]] = []
        for key, group in self.subfields(type_, details).items():
            name = group[0].node.name.value
            if name == "__typename":
                fields.append((key, Constant(literal(f'"{type_.name}"'))))
                continue
            field_def = type_.fields[name]
            definition = field_def.extensions.get(DEFINITION)
            if definition is None or definition.permission_classes or definition.extensions:
                fields.append((key, self.hole(type_, decl, f"{type_.name}.{name} has permissions or extensions")))
                continue
            python_name = definition.python_name
            relation = relations_of(decl).get(python_name)
            if isinstance(relation, Masked):
                column = decl.columns[relation.column or python_name]
                encode = self.encoder(type_, name, field_def, column)
                self.needs_viewer = True
                fields.append((key, MaskedColumn(_quote(column.name), encode, relation.rule)))
            elif isinstance(relation, Expr):
                encode = self.encoder(type_, name, field_def, SAColumn(relation.type_))
                fields.append((key, Computed(relation.sql, encode)))
            elif isinstance(relation, Col):
                column = decl.columns[relation.column]
                encode = self.encoder(type_, name, field_def, column)
                fields.append((key, Column(_quote(column.name), encode, relation.expr)))
            elif relation is not None:
                fields.append((key, self.relation(relation, field_def, group)))
            elif definition.base_resolver is None and python_name in decl.columns:
                column = decl.columns[python_name]
                encode = self.encoder(type_, name, field_def, column)
                fields.append((key, Column(_quote(column.name), encode)))
            else:
                fields.append((key, self.hole(type_, decl, f"{type_.name}.{name} needs Python")))
        return ObjectPlan(decl, fields)

    def hole(self, type_: GraphQLObjectType, decl: TableDecl, why: str) -> Hole:
        """A field left to its resolver, whose source is built from the row (`from_model`)."""
        if not hasattr(decl.cls, "from_model") or self.operation.operation == OperationType.SUBSCRIPTION:
            raise Unsupported(why)  # an event's fields come from the event, not from a row read back
        if type_.is_type_of is not None or type_.interfaces:
            raise Unsupported(f"{why}, and {type_.name} checks its values' types (is_type_of)")
        if not hybrid_convertible(decl.model):
            raise Unsupported(f"{why}, and a column of {type_.name} does not convert back from JSON exactly")
        self.hybrid = True
        return HOLE

    def encoder(
        self, type_: GraphQLObjectType, name: str, field_def: GraphQLField, column: Any
    ) -> Callable[[str], str]:
        return encoder(field_def.type, column)

    def relation(self, relation: Any, field_def: GraphQLField, group: list[FieldDetails]) -> Any:
        if isinstance(relation, Children):
            list_type = field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else None
            if not isinstance(list_type, GraphQLList) or not is_non_null_type(list_type.of_type):
                raise Unsupported("children are a non-null list of non-null objects")
            target = get_named_type(field_def.type)
            target = _object_type(target)
            if relation.visible is not None or relation.guard is not None or relation.filter is not None:
                self.needs_viewer = True
            return ChildrenPlan(relation, self.object(target, group))
        if isinstance(relation, ManyToOne):
            target = get_named_type(field_def.type)
            target = _object_type(target)
            if relation.visible is not None or relation.guard is not None:
                self.needs_viewer = True
            return ManyToOnePlan(
                self.object(target, group), _quote(relation.key), is_non_null_type(field_def.type), relation
            )
        return self.connection(relation, field_def, group)

    def connection(self, decl: Connection, field_def: GraphQLField, group: list[FieldDetails]) -> ConnectionPlan:
        if not is_non_null_type(field_def.type):
            raise Unsupported("a nullable connection")
        connection = get_named_type(field_def.type)
        connection = _object_type(connection)
        target = TYPES.get(decl.target)
        if target is None:
            raise Unsupported(f"{decl.target} is not declared")
        if decl.visible is not None or decl.filter is not None or decl.guard is not None:
            self.needs_viewer = True
        if any(spec.access is not None or spec.default_to_viewer for spec in decl.filters.values()):
            self.needs_viewer = True
        parts: list[tuple[str, tuple[str, Any]]] = []
        info_names: set[str] = set()
        for key, sub in self.subfields(connection, group).items():
            name = sub[0].node.name.value
            sub_type = get_named_type(connection.fields[name].type) if name != "__typename" else None
            if name == "__typename":
                parts.append((key, ("const", literal(f'"{connection.name}"'))))
            elif name == "nodes":
                sub_type = _object_type(sub_type)
                parts.append((key, ("nodes", self.object(sub_type, sub))))
            elif name == "totalCount":
                parts.append((key, ("totalCount", None)))
            elif name == "edges":
                sub_type = _object_type(sub_type)
                edge: list[tuple[str, tuple[str, Any]]] = []
                for edge_key, edge_group in self.subfields(sub_type, sub).items():
                    edge_name = edge_group[0].node.name.value
                    if edge_name == "cursor":
                        edge.append((edge_key, ("cursor", None)))
                    elif edge_name == "node":
                        node_type = get_named_type(sub_type.fields["node"].type)
                        node_type = _object_type(node_type)
                        edge.append((edge_key, ("node", self.object(node_type, edge_group))))
                    elif edge_name == "__typename":
                        edge.append((edge_key, ("const", literal(f'"{sub_type.name}"'))))
                    else:
                        raise Unsupported(f"{sub_type.name}.{edge_name}")
                parts.append((key, ("edges", edge)))
            elif name == "pageInfo":
                sub_type = _object_type(sub_type)
                info: list[tuple[str, str]] = []
                for info_key, info_group in self.subfields(sub_type, sub).items():
                    info_name = info_group[0].node.name.value
                    if info_name == "__typename":
                        info.append((info_key, literal(f'"{sub_type.name}"')))
                    elif info_name in ("hasNextPage", "hasPreviousPage", "startCursor", "endCursor"):
                        info_names.add(info_name)
                        info.append((info_key, info_name))
                    else:
                        raise Unsupported(f"PageInfo.{info_name}")
                parts.append((key, ("pageInfo", info)))
            else:
                raise Unsupported(f"{connection.name}.{name}")
        node = group[0].node
        reads_rows = any(
            kind in ("nodes", "edges") or (kind == "pageInfo" and any(n in ROW_INFO for _, n in spec))
            for _, (kind, spec) in parts
        )
        return ConnectionPlan(decl, target, field_def, node, parts, frozenset(info_names), reads_rows)

    def root(self, key: str, group: list[FieldDetails]) -> RootPlan:
        subscription = self.operation.operation == OperationType.SUBSCRIPTION
        query = self.schema.subscription_type if subscription else self.schema.query_type
        assert query is not None
        name = group[0].node.name.value
        coordinate = f"{query.name}.{name}"
        source = ROOTS.get(coordinate)
        if source is None:
            raise Unsupported(f"{coordinate} is not declared")
        field_def = query.fields[name]
        definition = field_def.extensions.get(DEFINITION)
        if definition is None or definition.permission_classes or definition.extensions:
            raise Unsupported(f"{coordinate} has permissions or extensions")
        plan: ConnectionPlan | ByIdPlan | ByViewerPlan | RowsPlan | LookupPlan | EventPlan
        if subscription != isinstance(source, Event):
            raise Unsupported("events are a subscription's roots, and only events")
        if isinstance(source, Event):
            target = _object_type(get_named_type(field_def.type))
            objects = self.object(target, group)
            if not _reads_database(objects):
                raise Unsupported("reads nothing: the Python rendering is cheaper")
            mapper: Any = sa_inspect(objects.decl.model)
            columns = [
                (prop.key, c.name, c.type.compile(dialect=DIALECT), isinstance(c.type, JSON | JSONB))
                for prop in mapper.column_attrs
                for c in prop.columns[:1]
            ]
            return RootPlan(key, coordinate, EventPlan(objects, columns), self.needs_viewer)
        guard = getattr(source, "guard", None)
        if guard is not None and not isinstance(source, ById) and (guard.owner is not None or guard.custom is not None):
            raise Unsupported("a root guard of this kind holds permissions only (there is no row yet)")
        if isinstance(source, Rows):
            list_type = field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else None
            if not isinstance(list_type, GraphQLList) or not is_non_null_type(list_type.of_type):
                raise Unsupported("rows are a non-null list of non-null objects")
            target = get_named_type(field_def.type)
            target = _object_type(target)
            self.needs_viewer = source.guard is not None
            plan = RowsPlan(source, self.object(target, group))
        elif isinstance(source, Connection):
            if source.child_key is not None or source.visible is not None:
                raise Unsupported("a root connection has no parent")
            if source.guard is not None and (source.guard.custom is not None or source.guard.owner is not None):
                raise Unsupported("a root guard holds permissions only (there is no row yet)")
            self.needs_viewer = source.guard is not None
            plan = self.connection(source, field_def, group)
        else:
            target = get_named_type(field_def.type)
            if is_non_null_type(field_def.type) or not is_object_type(target):
                raise Unsupported("a by-id root is a nullable object")
            target = _object_type(target)
            if isinstance(source, ByViewer):
                self.needs_viewer = True
                plan = ByViewerPlan(source, self.object(target, group))
            elif isinstance(source, Lookup):
                self.needs_viewer = source.guard is not None or source.row_guard is not None
                plan = LookupPlan(source, self.object(target, group), field_def, group[0].node)
            else:
                self.needs_viewer = source.guard is not None or source.row_guard is not None
                plan = ByIdPlan(source, self.object(target, group), field_def, group[0].node)
        signed_in = bool(getattr(source, "signed_in", False))
        return RootPlan(key, coordinate, plan, self.needs_viewer or signed_in, signed_in, self.hybrid)


def _object_type(type_: Any) -> GraphQLObjectType:
    if not isinstance(type_, GraphQLObjectType):
        raise Unsupported(f"{type_} is not an object type (interfaces and unions are not compiled)")
    return type_


def _fragments(document: DocumentNode) -> dict[str, FragmentDetails]:
    return {d.name.value: FragmentDetails(d) for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


class _Directives(Visitor):
    """The variables that @skip and @include read; `other` when any other directive is used."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.other = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
        if node.name.value not in ("skip", "include"):
            self.other = True  # @defer, @stream: the resolver path
            return
        for argument in node.arguments or ():
            if isinstance(argument.value, VariableNode):
                self.names.add(argument.value.name.value)


@dataclass(frozen=True)
class CompiledOperation:
    operation: OperationDefinitionNode
    roots: dict[str, RootPlan]  # by response key
    whole: bool  # every root field compiled, none hybrid: the answer is written without graphql-core

    def for_variables(self, variables: VariableValues) -> CompiledOperation | None:
        return self


MAX_VARIANTS = 16  # distinct values of the @skip/@include variables planned per document


@dataclass
class VariantOperation:
    """An operation whose fields depend on Boolean variables (@skip, @include): planned once per
    combination of their values, on first use."""

    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    names: tuple[str, ...]
    variants: dict[tuple[Any, ...], CompiledOperation | None] = field(default_factory=dict)

    def for_variables(self, variables: VariableValues) -> CompiledOperation | None:
        key = tuple(variables.coerced.get(name) for name in self.names)
        if key not in self.variants:
            if len(self.variants) >= MAX_VARIANTS:
                return None
            self.variants[key] = _plan(self.schema, self.document, self.operation, variables)
        return self.variants[key]


def plan_operation(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> CompiledOperation | VariantOperation | None:
    """The compiled root fields of a query operation (or a subscription's events); None if none
    compiles. With @skip/@include on variables, the plan is made per combination of their values
    (`for_variables`)."""
    kind = operation.operation
    if kind not in (OperationType.QUERY, OperationType.SUBSCRIPTION):
        return None
    directives = _Directives()
    visit(document, directives)
    if directives.other:
        return None
    if directives.names:
        return VariantOperation(schema, document, operation, tuple(sorted(directives.names)))
    return _plan(schema, document, operation, NO_VARIABLES)


def _plan(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, variables: VariableValues
) -> CompiledOperation | None:
    kind = operation.operation
    root_type = schema.query_type if kind == OperationType.QUERY else schema.subscription_type
    if root_type is None:
        return None
    roots: dict[str, RootPlan] = {}
    grouped = collect_fields(schema, _fragments(document), variables, root_type, operation).grouped_field_set
    for key, group in grouped.items():
        try:
            roots[key] = _Planner(schema, document, operation, variables).root(key, group)
        except Unsupported:
            continue
        except Exception:  # a declaration the planner cannot follow: the resolvers answer
            log.exception("planning %s failed; it keeps the resolvers", key)
            continue
    whole = len(roots) == len(grouped) and not any(root.hybrid for root in roots.values())
    return CompiledOperation(operation, roots, whole) if roots else None
