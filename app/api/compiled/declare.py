"""What a compiled read may read: declarations placed next to the strawberry types.

A type declared with `table(model, ...)` reads one table. Its plain fields (strawberry fields with
no resolver whose Python name is a column of the model) compile to that column; fields with a
resolver compile only when declared here (a `Connection`, a `ManyToOne`); anything else keeps the
resolver path. Root fields are declared with `root("Query.vendors", ...)`.

A `Rule` says who may see a private part of a row. It has two forms that must agree: `sql` (the
predicate a plan embeds) and `app.accounts.permissions.permits` (what resolvers call), so a rule
is written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Text, inspect

from app.api.pagination import decode_int_cursor, decode_time_uuid_cursor

SUPERUSER = "*"


def _unconfined_or(column: str) -> Callable[[str, Viewer], str]:
    return lambda row, viewer: f"({viewer.key_environment} IS NULL OR {row}.{column} = {viewer.key_environment})"


class Viewer(Protocol):
    """The caller as SQL: parameters bound per request."""

    @property
    def user(self) -> str:
        """The caller's user id (NULL for anonymous callers and API keys)."""
        ...

    @property
    def key_environment(self) -> str:
        """The environment an API key is confined to (NULL: not such a key, or a project-wide one)."""
        ...

    @property
    def key_project(self) -> str:
        """The project of the API key calling (NULL: not an API key)."""
        ...


T = TypeVar("T", bound=type)


def literal(text: str) -> str:
    """`text` as an SQL string literal (standard_conforming_strings, PostgreSQL's default)."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Rule:
    """A row's owner (`owner`: the column holding their user id), or a holder of any of
    `permissions` (or `*`); or anyone when the boolean column `public` is true; or whoever
    `custom(row, viewer)` lets through (SQL, e.g. membership of the row's guild; its Python twin is
    the resolver's own check, and the comparison suite holds the two together). Anonymous callers
    and API keys are neither owners nor holders."""

    owner: str | None = None
    permissions: tuple[str, ...] = ()
    public: str | None = None
    custom: Callable[[str, Viewer], str] | None = None

    def sql(self, row: str, viewer: Viewer) -> str:
        """The predicate over the row alias `row`, for the caller `viewer`. The permission test
        does not depend on the row, so PostgreSQL evaluates it once per statement."""
        tests = []
        if self.public is not None:
            tests.append(f"{row}.{self.public}")
        if self.custom is not None:
            tests.append(self.custom(row, viewer))
        return self.sql_of(f"{row}.{self.owner}" if self.owner is not None else None, viewer, tests)

    def sql_of(self, owner: Any, viewer: Viewer, tests: list[str] | None = None) -> str:
        """The predicate with the owner's id given as an SQL expression (an argument, say)."""
        tests = list(tests or ())
        if self.owner is not None:
            tests.append(f"{owner} = {viewer.user}")
        if self.permissions:
            names = ", ".join(literal(p) for p in (*self.permissions, SUPERUSER))
            tests.append(
                "EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
                f"WHERE ur.user_id = {viewer.user} AND r.permissions ?| ARRAY[{names}])"
            )
        # Used only where NULL counts as false (WHERE, CASE WHEN), never negated; written plainly
        # so that an owner's test stays indexable (`(x = $1) IS TRUE` is not).
        return "(" + " OR ".join(tests) + ")" if tests else "false"


# What an API key confined to one environment may see of its project: that environment and what
# is in it (app.logs.keys.key_environment). Over a row holding an environment's id in `column`.
def key_may_see(column: str) -> Rule:
    return Rule(custom=_unconfined_or(column))


# Anyone signed in (not anonymous, not an API key): as a guard, the resolver's UNAUTHENTICATED.
SIGNED_IN = Rule(custom=lambda row, viewer: f"{viewer.user} IS NOT NULL")


@dataclass(frozen=True)
class Filter:
    """An argument that narrows rows: `sql(alias, placeholder)` is the predicate. The argument's
    value goes through `bind` first (a raising `bind` hands the field to its resolver); the
    filter applies when the value is not None (or, with `truthy`, when it is truthy: `search: ""`
    filters nothing). `guard(placeholder)`, if given, must hold or the resolver answers (e.g. an
    `ownerId` naming nobody is NOT_FOUND there)."""

    sql: Callable[[str, Any], str]  # (row alias, placeholder: formats as "$n")
    bind: Callable[[Any], Any] = lambda value: value
    truthy: bool = False
    guard: Callable[[Any], str] | None = None
    access: Callable[[Any, Viewer], str] | None = None  # a guard that asks who is calling
    default_to_viewer: bool = False  # not given: the caller's user id (the caller's own rows)


@dataclass(frozen=True)
class Keyset:
    """The order of a connection: newest first over (time column, uuid column), with its time
    cursor `kind` (`pagination.time_cursor`)."""

    time: str
    key: str
    kind: str
    descending: bool = True
    decode: Callable[[str, str | None], tuple[datetime, uuid.UUID] | None] = decode_time_uuid_cursor

    def order(self, row: str, reverse: bool = False) -> str:
        direction = "DESC" if self.descending != reverse else "ASC"
        return f'{row}."{self.time}" {direction}, {row}."{self.key}" {direction}'

    def cursor(self, row: str) -> str:
        """`pagination.time_cursor` of the row (NULL if it cannot be written)."""
        return f'lodge_cursor({literal(self.kind)}, lodge_ts({row}."{self.time}") || \'|\' || {row}."{self.key}"::text)'

    def after(self, row: str, position: Any, param: Callable[[Any], Any], before: bool = False) -> str:
        stamp, key = position
        sign = "<" if self.descending != before else ">"
        return f'({row}."{self.time}", {row}."{self.key}") {sign} ({param(stamp)}::timestamptz, {param(key)}::uuid)'


@dataclass(frozen=True)
class NameKeyset:
    """The order of a connection by a text column, then the uuid key, ascending, with the cursor
    `encode_cursor(kind, f"{key}|{text}")` (guilds by name), decoded by `decode(cursor)` into
    (text, key)."""

    text: str
    key: str
    kind: str
    decode_cursor: Callable[[str | None], tuple[str, uuid.UUID] | None]

    def decode(self, kind: str, cursor: str | None) -> tuple[str, uuid.UUID] | None:
        return self.decode_cursor(cursor)

    def order(self, row: str, reverse: bool = False) -> str:
        direction = "DESC" if reverse else "ASC"
        return f'{row}."{self.text}" {direction}, {row}."{self.key}" {direction}'

    def cursor(self, row: str) -> str:
        return f'lodge_cursor({literal(self.kind)}, {row}."{self.key}"::text || \'|\' || {row}."{self.text}")'

    def after(self, row: str, position: Any, param: Callable[[Any], Any], before: bool = False) -> str:
        text, key = position
        sign = "<" if before else ">"
        return f'({row}."{self.text}", {row}."{self.key}") {sign} ({param(text)}::text, {param(key)}::uuid)'


@dataclass(frozen=True)
class SeqKeyset:
    """The order of a connection over one integer column (a sequence), with its integer cursor
    `kind` (`pagination.encode_cursor(kind, n)`, decoded by `decode_int_cursor`)."""

    column: str
    kind: str
    descending: bool = False
    decode: Callable[[str, str | None], int | None] = decode_int_cursor

    def order(self, row: str, reverse: bool = False) -> str:
        return f'{row}."{self.column}" {"DESC" if self.descending != reverse else "ASC"}'

    def cursor(self, row: str) -> str:
        return f'lodge_cursor({literal(self.kind)}, {row}."{self.column}"::text)'

    def after(self, row: str, position: Any, param: Callable[[Any], Any], before: bool = False) -> str:
        return f'{row}."{self.column}" {"<" if self.descending != before else ">"} {param(position)}::bigint'


@dataclass(frozen=True)
class Connection:
    """A Relay connection of `target` rows. Nested (`child_key` set): the rows whose `child_key`
    is the parent's `parent_key`; at the root: all rows (that `where(alias)` lets through).
    Nested, callers for whom `visible` does not hold get the empty connection (no nodes,
    totalCount 0, hasPreviousPage false); at the root, callers for whom `guard` does not hold
    get the resolver's error."""

    target: str
    order: Keyset | SeqKeyset | NameKeyset
    child_key: str | None = None
    parent_key: str = "id"
    filters: Mapping[str, Filter] = field(default_factory=dict)
    visible: Rule | None = None
    where: Callable[[str], str] | None = None
    guard: Rule | None = None
    filter: Rule | None = None  # rows the caller may not see are left out (counted out too)
    signed_in: bool = False  # at the root: anonymous callers and API keys get the resolver's error


@dataclass(frozen=True)
class ById:
    """One `target` row by its primary key `id`, taken from the argument `arg`; null if none."""

    target: str
    arg: str = "id"
    bind: Callable[[Any], Any] = lambda value: value
    where: Callable[[str], str] | None = None  # rows that count as found
    guard: Rule | None = None  # over the argument as the owner: else the resolver's error
    row_guard: Rule | None = None  # over the row found: else the resolver's error
    signed_in: bool = False  # anonymous callers and API keys get the resolver's error


@dataclass(frozen=True)
class Lookup:
    """One `target` row whose columns equal the arguments (`keys`: argument -> column, a unique
    key); null if none. Callers for whom `guard` (permissions only) does not hold get the
    resolver's error."""

    target: str
    keys: Mapping[str, str]
    guard: Rule | None = None
    signed_in: bool = False
    one_of: bool = False  # exactly one of the keys is given (else the resolver's BAD_USER_INPUT)
    bind: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)  # per argument
    row_guard: Rule | None = None  # over the row found: else the resolver's error


@dataclass(frozen=True)
class ByViewer:
    """The caller's own `target` row (`me`): null for anonymous callers and API keys."""

    target: str
    where: Callable[[str], str] | None = None


@dataclass(frozen=True)
class Masked:
    """A column that only callers for whom `rule` holds (over the row) see; null for others."""

    rule: Rule
    column: str | None = None  # the model attribute; the field's Python name by default


@dataclass(frozen=True)
class ManyToOne:
    """The `target` row whose `id` is this row's `key`. A missing row is null, or, for a non-null
    field, left to the resolver."""

    target: str
    key: str
    visible: Rule | None = None  # over the target row: null for callers it does not let through
    guard: Rule | None = None  # over the target row: else the resolver's error
    where: Callable[[str], str] | None = None  # rows that count as found
    required: bool = False  # a missing row is the resolver's error (NOT_FOUND), even if nullable


@dataclass(frozen=True)
class Col:
    """A field that reads a column under another name (`joinedAt` reads `created_at`), through
    `expr` (SQL over the column) when the resolver transforms it (`upper()`, `or {}`)."""

    column: str
    expr: Callable[[str], str] | None = None


@dataclass(frozen=True)
class Expr:
    """A field computed in SQL from the row (`sql(alias)`), of the SQL type `type_` (a cursor)."""

    sql: Callable[[str], str]
    type_: Any = field(default_factory=Text)


FALSY_JSON = """ARRAY['null', 'false', '0', '""', '[]', '{}']::jsonb[]"""  # 0.0 = 0 in jsonb


def json_or_empty(value: str) -> str:
    """`value or {}` in Python, for a jsonb column: any falsy JSON value (and NULL) is {}."""
    return f"CASE WHEN {value} IS NULL OR {value} = ANY({FALSY_JSON}) THEN '{{}}'::jsonb ELSE {value} END"


@dataclass(frozen=True)
class Children:
    """An unpaged list (`[T!]!`) of `target` rows whose `child_key` is the parent's `parent_key`
    (or, with `via=(table, parent column, child column)`, rows linked through a join table), in
    `order(alias)`: the resolver's order exactly (COLLATE "C" where Python sorts text). Callers
    for whom `visible` (over the parent) does not hold get []."""

    target: str
    order: Callable[[str], str]
    child_key: str = ""
    parent_key: str = "id"
    via: tuple[str, str, str] | None = None
    where: Callable[[str], str] | None = None
    visible: Rule | None = None
    guard: Rule | None = None  # over the parent row: else the resolver's error (FORBIDDEN)
    filter: Rule | None = None  # over each child row: rows a caller may not see are left out


Relation = Connection | ManyToOne | Masked | Children | Col | Expr


@dataclass(frozen=True)
class TableDecl:
    name: str  # the GraphQL type
    model: type
    cls: type  # the strawberry type: `cls.from_model(model(...))` is a resolver's source (hybrid plans)
    table: str
    columns: Mapping[str, Any]  # Python attribute name -> SQLAlchemy column
    relations: Mapping[str, Relation]  # Python attribute name -> relation


TYPES: dict[str, TableDecl] = {}
# Relations declared by another domain than the type's own (`relate`): the domain that owns the
# rows says how they hang under someone else's type (User.vendors lives with the vendors).
RELATED: dict[str, dict[str, Relation]] = {}


@dataclass(frozen=True)
class Rows:
    """Every `target` row (that `where` lets through), unpaged, in `order(alias)`; callers for
    whom `guard` does not hold get the resolver's error."""

    target: str
    order: Callable[[str], str]
    where: Callable[[str], str] | None = None
    guard: Rule | None = None
    signed_in: bool = False


@dataclass(frozen=True)
class Event:
    """A subscription's event: a `target` row already read, carried by the payload as `.row`. Its
    own fields are the row's as it was when the event happened; its relations are read from the
    database. A selection with no relation keeps the Python rendering (it reads nothing)."""

    target: str


Root = Connection | ById | ByViewer | Rows | Lookup | Event
ROOTS: dict[str, Root] = {}


def table(model: type, **relations: Relation) -> Callable[[T], T]:
    """Declare that a strawberry type (the decorated class) reads `model`'s table."""

    def declare(cls: T) -> T:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        mapper: Any = inspect(model)
        # By attribute, and by column name where the attribute differs (Integration.metadata_).
        columns = {prop.key: prop.columns[0] for prop in mapper.column_attrs}
        for prop in mapper.column_attrs:
            columns.setdefault(prop.columns[0].name, prop.columns[0])
        names = {f.python_name for f in definition.fields}
        unknown = set(relations) - names
        if unknown:
            raise TypeError(f"{definition.name} has no field {', '.join(sorted(unknown))}")
        TYPES[definition.name] = TableDecl(
            name=definition.name,
            model=model,
            cls=cls,
            table=mapper.local_table.name,
            columns=columns,
            relations=dict(relations),
        )
        return cls

    return declare


def relate(type_name: str, **relations: Relation) -> None:
    """Declare relations of a type declared elsewhere (by GraphQL type name)."""
    RELATED.setdefault(type_name, {}).update(relations)


def relations_of(decl: TableDecl) -> Mapping[str, Relation]:
    extra = RELATED.get(decl.name)
    return {**decl.relations, **extra} if extra else decl.relations


def viewer_dependence(type_name: str, python_name: str) -> bool | None:
    """Whether a declared relation's value depends on who asks (a rule applies to it); None when
    the field is not a declared relation."""
    decl = TYPES.get(type_name)
    relation = relations_of(decl).get(python_name) if decl is not None else None
    if relation is None:
        return None
    if isinstance(relation, Masked):
        return True
    if isinstance(relation, Connection):
        asks = any(spec.access is not None or spec.default_to_viewer for spec in relation.filters.values())
        return relation.visible is not None or relation.filter is not None or relation.guard is not None or asks
    if isinstance(relation, Children):
        return relation.visible is not None or relation.guard is not None or relation.filter is not None
    if isinstance(relation, ManyToOne):
        return relation.visible is not None or relation.guard is not None
    return False  # a column or an expression over one


def root(coordinate: str, source: Root) -> None:
    """Declare how a root field (`"Query.vendors"`) reads its rows."""
    ROOTS[coordinate] = source
