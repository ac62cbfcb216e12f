"""The private APIs of graphql-core, strawberry and SQLAlchemy (and two smaller packages) that Lodge relies on are
listed in docs/private-apis.md. These tests fail when a pinned version changes, or when a listed symbol is gone or
takes other parameters: each failure points to that list. No database is needed."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import strawberry
from graphql import GraphQLObjectType, parse

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "private-apis.md"
POINTER = "docs/private-apis.md"

# The packages whose versions docs/private-apis.md records (its "Checked against" table).
PACKAGES = ["graphql-core", "strawberry-graphql", "sqlalchemy", "cross-web", "broadcaster"]

EXECUTOR = "graphql.execution.executor"
COLLECT = "graphql.execution.collect_fields"
STRAWBERRY_EXECUTOR = ("strawberry.schema.schema", "StrawberryGraphQLCoreExecutionContext")

# (module, attribute path): what Lodge imports, overrides, calls or reads. Mirrors the tables of docs/private-apis.md.
SYMBOLS: list[tuple[str, str]] = [
    # graphql-core
    (EXECUTOR, "Executor.execute_field"),
    (EXECUTOR, "Executor.complete_object_value"),
    (EXECUTOR, "Executor.complete_value"),
    (EXECUTOR, "Executor.collect_subfields"),
    (EXECUTOR, "Executor.build_resolve_info"),
    (EXECUTOR, "Executor.handle_field_error"),
    (EXECUTOR, "Executor.build_per_event_executor"),
    (EXECUTOR, "Executor.execute_operation"),
    (EXECUTOR, "to_nodes"),
    (COLLECT, "collect_fields"),
    (COLLECT, "collect_subfields"),
    (COLLECT, "CollectedFields.grouped_field_set"),
    (COLLECT, "CollectedFields.new_defer_usages"),
    (COLLECT, "FieldDetails.node"),
    (COLLECT, "FragmentDetails.definition"),
    ("graphql.execution.middleware", "MiddlewareManager.middlewares"),
    # strawberry
    STRAWBERRY_EXECUTOR,
    ("strawberry.schema.schema", "validate_document"),
    ("strawberry.execution.is_awaitable", "optimized_is_awaitable"),
    ("strawberry.schema.schema_converter", "GraphQLCoreConverter.DEFINITION_BACKREF"),
    ("strawberry.types.field", "StrawberryField.is_basic_field"),
    ("strawberry.types.field", "StrawberryField.arguments"),
    ("strawberry.types.fields.resolver", "StrawberryResolver.is_async"),
    ("strawberry.types.fields.resolver", "StrawberryResolver.info_parameter"),
    ("strawberry.types.fields.resolver", "StrawberryResolver.root_parameter"),
    ("strawberry.types.fields.resolver", "StrawberryResolver.self_parameter"),
    ("strawberry.types.base", "StrawberryObjectDefinition.from_input"),
    ("strawberry.asgi", "ASGIWebSocketAdapter.close"),
    ("strawberry.asgi", "GraphQL.websocket_adapter_class"),
    ("strawberry.http.base", "BaseView.should_render_graphql_ide"),
    ("strawberry.http.base", "BaseRequestProtocol"),
    ("strawberry.http.async_base_view", "AsyncBaseHTTPView.run"),
    ("strawberry.schema.schema", "Schema.process_errors"),
    ("strawberry.schema.exceptions", "CannotGetOperationTypeError"),
    ("strawberry.schema.exceptions", "InvalidOperationTypeError"),
    ("strawberry.exceptions", "MissingQueryError"),
    ("strawberry.types.unset", "UNSET"),
    ("strawberry.types.graphql", "OperationType"),
    # SQLAlchemy
    ("sqlalchemy.sql.selectable", "Select._order_by_clauses"),
    ("sqlalchemy.dialects.postgresql.asyncpg", "AsyncAdapt_asyncpg_connection.ping"),
    # other packages
    ("cross_web", "HTTPException"),
    ("broadcaster._backends.base", "BroadcastBackend"),
    ("broadcaster._backends.memory", "MemoryBackend"),
]

# (module, class path + attribute): attributes set in `__init__`, so not visible on the class. They are checked on
# instances built from a tiny schema (`_instances`). Also mirrored in docs/private-apis.md.
INSTANCE_ATTRIBUTES: list[tuple[str, str]] = [
    (EXECUTOR, "Executor._relevant_sub_fields"),
    ("strawberry.schema.schema", "StrawberryGraphQLCoreExecutionContext.operation_extensions"),
    ("strawberry.schema.schema", "Schema._schema"),
    ("strawberry.types.field", "StrawberryField.python_name"),
    ("strawberry.types.field", "StrawberryField.base_resolver"),
    ("strawberry.types.field", "StrawberryField.extensions"),
    ("strawberry.types.field", "StrawberryField.permission_classes"),
    ("strawberry.types.field", "StrawberryField.metadata"),
    ("strawberry.types.fields.resolver", "StrawberryResolver.wrapped_func"),
    ("strawberry.types.base", "StrawberryObjectDefinition.fields"),
    ("strawberry.types.base", "StrawberryObjectDefinition.name"),
    ("strawberry.types.info", "Info._raw_info"),
    ("strawberry.asgi", "ASGIWebSocketAdapter.ws"),
]

# The parameters (after self) Lodge's overrides take or its calls pass, in order; any later ones must have defaults.
PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    (EXECUTOR, "Executor.execute_field"): ("parent_type", "source", "field_details_list", "path", "position_context"),
    (EXECUTOR, "Executor.complete_object_value"): (
        "return_type",
        "field_details_list",
        "info",
        "path",
        "result",
        "position_context",
    ),
    (EXECUTOR, "Executor.complete_value"): (
        "return_type",
        "field_details_list",
        "info",
        "path",
        "result",
        "position_context",
    ),
    (EXECUTOR, "Executor.collect_subfields"): ("return_type", "field_details_list"),
    (EXECUTOR, "Executor.build_resolve_info"): ("field_def", "field_nodes", "parent_type", "path"),
    (EXECUTOR, "Executor.handle_field_error"): ("raw_error", "return_type", "field_details_list", "path"),
    (EXECUTOR, "Executor.build_per_event_executor"): ("payload",),
    (EXECUTOR, "Executor.execute_operation"): ("serially",),
    (EXECUTOR, "to_nodes"): ("field_details_list",),
    (COLLECT, "collect_fields"): ("schema", "fragments", "variable_values", "runtime_type", "operation"),
    (COLLECT, "collect_subfields"): (
        "schema",
        "fragments",
        "variable_values",
        "operation",
        "return_type",
        "field_details_list",
    ),
    ("strawberry.schema.schema", "validate_document"): ("schema", "document", "validation_rules"),
    ("strawberry.execution.is_awaitable", "optimized_is_awaitable"): ("value",),
    ("strawberry.asgi", "ASGIWebSocketAdapter.close"): ("code", "reason"),
    ("strawberry.http.base", "BaseView.should_render_graphql_ide"): ("request",),
    ("strawberry.http.async_base_view", "AsyncBaseHTTPView.run"): ("request", "context", "root_value"),
    ("strawberry.schema.schema", "Schema.process_errors"): ("errors", "execution_context"),
    ("sqlalchemy.dialects.postgresql.asyncpg", "AsyncAdapt_asyncpg_connection.ping"): (),
}

# app/api/compiled/hybrid.py converts columns by `type(column_type).__name__`.
TYPE_NAMES: list[tuple[str, str]] = [
    *(
        ("sqlalchemy.types", name)
        for name in (
            "UUID",
            "DateTime",
            "Date",
            "Double",
            "Float",
            "REAL",
            "Integer",
            "BigInteger",
            "SmallInteger",
            "Boolean",
            "Text",
            "String",
            "JSON",
        )
    ),
    *(("sqlalchemy.dialects.postgresql", name) for name in ("INET", "JSONB", "ARRAY")),
    ("sqlmodel", "AutoString"),
]


def _see(what: str) -> str:
    return f"{what}: Lodge relies on it (see {POINTER}, which says where and what for); adapt Lodge, then the list"


def _resolve(module: str, path: str) -> Any:
    """The object at `module`.`path`, or a test failure that names it."""
    try:
        value: Any = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(_see(f"module {module} no longer imports ({exc})"))
    done = module
    for part in path.split(".") if path else ():
        if not hasattr(value, part):
            pytest.fail(_see(f"{done} has no attribute {part!r} any more (looking for {module}.{path})"))
        value = getattr(value, part)
        done = f"{done}.{part}"
    return value


def _recorded_versions() -> dict[str, str]:
    """The versions in the "Checked against" table of docs/private-apis.md."""
    text = DOC.read_text()
    section = text.partition("## Checked against")[2].partition("\n## ")[0]
    rows = re.findall(r"^\|\s*([A-Za-z0-9_.-]+)\s*\|\s*([^|\s]+)\s*\|\s*$", section, flags=re.MULTILINE)
    return {package: version for package, version in rows if package != "package" and not version.startswith("-")}


def _id(symbol: tuple[str, str]) -> str:
    return f"{symbol[0]}:{symbol[1]}"


# -- versions ------------------------------------------------------------------------------------------------------


def test_the_doc_records_every_checked_package() -> None:
    recorded = _recorded_versions()
    assert sorted(recorded) == sorted(PACKAGES), (
        f"{POINTER} records versions of {sorted(recorded)}, this test checks {sorted(PACKAGES)}: make them agree"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_installed_version_is_the_one_checked(package: str) -> None:
    recorded = _recorded_versions().get(package)
    installed = importlib.metadata.version(package)
    assert recorded is not None, f"{POINTER} records no version of {package}: add it to its 'Checked against' table"
    assert installed == recorded, (
        f"{package} is {installed} now, {POINTER} was checked against {recorded}: review the private APIs listed "
        f"there (the upstream changelog for each symbol; uv run pytest tests/test_private_apis.py "
        f"tests/api/test_fast.py tests/api/test_compiled*.py), then update the recorded version"
    )


# -- symbols -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS, ids=_id)
def test_symbol_still_exists(symbol: tuple[str, str]) -> None:
    _resolve(*symbol)


def _parameter_problem(function: Any, expected: tuple[str, ...]) -> str | None:
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    names = tuple(parameter.name for parameter in parameters)
    if names[: len(expected)] != expected:
        return f"takes {names} now, Lodge expects {expected} first"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    required = [p.name for p in parameters[len(expected) :] if p.default is p.empty and p.kind not in variadic]
    if required:
        return f"now also requires {required}, which Lodge does not pass"
    return None


@pytest.mark.parametrize("symbol", list(PARAMETERS), ids=_id)
def test_parameters_are_the_ones_lodge_expects(symbol: tuple[str, str]) -> None:
    expected = PARAMETERS[symbol]
    module, path = symbol
    owners = [(module, path)]
    if module == EXECUTOR and path.startswith("Executor."):
        # Lodge's executor inherits strawberry's (and graphql-core's IncrementalExecutor): check what it really gets.
        owners.append((STRAWBERRY_EXECUTOR[0], f"{STRAWBERRY_EXECUTOR[1]}.{path.partition('.')[2]}"))
    for owner in owners:
        problem = _parameter_problem(_resolve(*owner), expected)
        assert problem is None, _see(f"{'.'.join(owner)} {problem}")


def test_every_symbol_with_parameters_is_listed() -> None:
    assert set(PARAMETERS) <= set(SYMBOLS), "PARAMETERS names a symbol that SYMBOLS does not list"


def test_the_doc_lists_every_symbol() -> None:
    text = DOC.read_text()
    missing = [f"{module}.{path}" for module, path in SYMBOLS + INSTANCE_ATTRIBUTES if f"{module}.{path}" not in text]
    assert not missing, f"{POINTER} does not list {missing}: say there where Lodge uses each, and what for"


# -- what only instances show ----------------------------------------------------------------------------------------


@strawberry.type
class Point:
    x: int

    @strawberry.field
    def double(self) -> int:
        return self.x * 2


INFOS: list[Any] = []


@strawberry.type
class Query:
    @strawberry.field
    def point(self, info: strawberry.Info) -> Point:
        INFOS.append(info)
        return Point(x=1)


def _instances() -> dict[type, object]:
    """One instance of each class that INSTANCE_ATTRIBUTES names, built as Lodge's code gets them."""
    from cross_web import HTTPException
    from graphql.execution.executor import Executor
    from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    schema = strawberry.Schema(query=Query)
    INFOS.clear()
    result = schema.execute_sync("{ point { x double } }")
    assert result.errors is None and INFOS, result.errors
    document = parse("{ point { x } }")
    executor = Executor.build(schema._schema, document)
    strawberry_executor = StrawberryGraphQLCoreExecutionContext.build(
        schema._schema, document, operation_extensions={"persistedQuery": {}}
    )
    assert isinstance(executor, Executor), executor
    definition = Point.__strawberry_definition__  # type: ignore[attr-defined]
    double = next(f for f in definition.fields if f.python_name == "double")
    socket: Any = object()  # a starlette WebSocket in Lodge; the adapter only keeps it
    return {
        Executor: executor,
        StrawberryGraphQLCoreExecutionContext: strawberry_executor,
        type(schema): schema,
        type(double): double,
        type(double.base_resolver): double.base_resolver,
        type(definition): definition,
        type(INFOS[0]): INFOS[0],
        ASGIWebSocketAdapter: ASGIWebSocketAdapter(GraphQL(schema), request=socket, response=socket),
        HTTPException: HTTPException(400, "bad"),
    }


@pytest.mark.parametrize("symbol", INSTANCE_ATTRIBUTES, ids=_id)
def test_instance_attribute_still_exists(symbol: tuple[str, str]) -> None:
    module, path = symbol
    owner, _, attribute = path.rpartition(".")
    cls = _resolve(module, owner)
    instances = _instances()
    instance = next((value for kind, value in instances.items() if kind is cls), None)
    assert instance is not None, f"no instance of {module}.{owner} is built by _instances(): add one"
    assert hasattr(instance, attribute), _see(f"a {module}.{owner} has no attribute {attribute!r} any more")


def test_cross_web_http_exception_carries_status_and_reason() -> None:
    from cross_web import HTTPException

    error = HTTPException(400, "Unable to parse request body as JSON")
    assert (error.status_code, error.reason) == (400, "Unable to parse request body as JSON"), _see(
        "cross_web.HTTPException (status_code, reason)"
    )


def test_strawberry_fields_lead_back_to_their_definitions() -> None:
    """fast.py and visibility.py hard-code the key; cost.py and lengths.py use strawberry's constant."""
    from strawberry.schema.schema_converter import GraphQLCoreConverter

    assert GraphQLCoreConverter.DEFINITION_BACKREF == "strawberry-definition", _see(
        "strawberry's back-reference key changed: app/api/fast.py DEFINITION and app/api/visibility.py _DEFINITION"
    )
    schema = strawberry.Schema(query=Query)
    point = schema._schema.type_map["Point"]
    assert isinstance(point, GraphQLObjectType)
    definition = Point.__strawberry_definition__  # type: ignore[attr-defined]
    double = next(f for f in definition.fields if f.python_name == "double")
    assert point.fields["double"].extensions.get("strawberry-definition") is double, _see(
        "a graphql-core field built by strawberry no longer carries its StrawberryField under 'strawberry-definition'"
    )
    resolver = double.base_resolver
    assert not double.is_basic_field and resolver is not None
    assert (resolver.is_async, resolver.info_parameter, resolver.root_parameter) == (False, None, None)
    assert resolver.self_parameter is not None and resolver.wrapped_func(Point(x=2)) == 4, _see(
        "what app/api/fast.py's _reader reads of a plain resolver"
    )


def test_strawberry_executor_takes_operation_extensions() -> None:
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    schema = strawberry.Schema(query=Query)
    extensions = {"persistedQuery": {"version": 1}}
    executor = StrawberryGraphQLCoreExecutionContext.build(
        schema._schema, parse("{ point { x } }"), operation_extensions=extensions
    )
    assert getattr(executor, "operation_extensions", None) is extensions, _see(
        "the operation_extensions keyword app/api/pipeline.py passes through graphql-core's execute"
    )


def test_collected_fields_unpack_as_fast_py_expects() -> None:
    from graphql.execution.collect_fields import CollectedFields, FieldDetails, FragmentDetails

    assert CollectedFields._fields[:2] == ("grouped_field_set", "new_defer_usages"), _see(
        "app/api/fast.py unpacks collect_subfields' result by position"
    )
    assert FieldDetails._fields[0] == "node" and FragmentDetails._fields[0] == "definition", _see(
        "app/api/compiled/planner.py builds FragmentDetails positionally"
    )


def test_select_keeps_its_order_by_clauses() -> None:
    from sqlalchemy import column, select, table

    t = table("t", column("a"), column("b"))
    statement = select(t.c.a).order_by(t.c.b.desc(), t.c.a)
    assert len(statement._order_by_clauses) == 2, _see(
        "Select._order_by_clauses (app/api/loaders.py lateral_pages ranks each page's rows by it)"
    )


@pytest.mark.parametrize("type_name", TYPE_NAMES, ids=_id)
def test_column_type_keeps_its_class_name(type_name: tuple[str, str]) -> None:
    module, name = type_name
    assert _resolve(module, name).__name__ == name, _see(
        f"{module}.{name} is named otherwise now (app/api/compiled/hybrid.py _CONVERT is keyed by class name)"
    )
