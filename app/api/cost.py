"""A cost limit computed from page sizes and nesting, before execution.

The cost of an operation is the number of objects it could return: a field returning objects
costs one per object its parent could be, times its own size: `first`/`last` (or the default page)
for a paged field, for an unpaged list the bound its service enforces (declared beside the field
with `metadata=max_items(BOUND)`) or else an estimate, one otherwise. The lists inside a connection
(`nodes`, `edges`) are the connection's page, not a new multiplication. Introspection is free
(the depth and token limits bound it). `{ vendors(first: 100) { nodes { locations(first: 10) {
nodes { lat } } } } }` costs 100 + 100 + 1,000 + 1,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema_converter import GraphQLCoreConverter

from app.api.errors import BadUserInput
from app.api.pagination import DEFAULT_PAGE, MAX_PAGE
from app.observability import metrics

# The estimate for a list without `first` whose service enforces no bound (such lists are
# unbounded: a bound belongs in the service, declared with max_items).
UNPAGED_LIST = 10
PAGE_ARGUMENTS = ("first", "last")
MAX_ITEMS = "lodge.max_items"


def max_items(bound: int) -> dict[str, int]:
    """Metadata of an unpaged list field: the most items its service lets it hold, which is what
    the cost limit counts for it. `@strawberry.field(metadata=max_items(MAX_NODES))`."""
    return {MAX_ITEMS: bound}


class QueryTooCostly(BadUserInput):
    pass


def operation_cost(
    schema: GraphQLSchema, document: Any, operation_name: str | None, variables: dict[str, Any] | None
) -> int:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operation = _operation(document, operation_name)
    if operation is None:
        return 0
    defaults = {
        d.variable.name.value: value_from_ast_untyped(d.default_value)
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
    values = {**defaults, **(variables or {})}
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    return _cost(schema, root, operation.selection_set, 1, fragments, values, in_connection=False, seen=())


def _operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def _fields(
    schema: GraphQLSchema,
    parent: Any,
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: tuple[str, ...],
) -> Iterator[tuple[Any, FieldNode]]:
    """(the type a field is read on, the field) for every field, through fragments."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield parent, selection
        elif isinstance(selection, InlineFragmentNode):
            on = schema.get_type(selection.type_condition.name.value) if selection.type_condition else parent
            yield from _fields(schema, on or parent, selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in seen:
                continue  # validation reports both
            on = schema.get_type(fragment.type_condition.name.value) or parent
            yield from _fields(schema, on, fragment.selection_set, fragments, (*seen, name))


def _cost(
    schema: GraphQLSchema,
    parent: Any,
    selection_set: SelectionSetNode,
    multiplier: int,
    fragments: dict[str, FragmentDefinitionNode],
    values: dict[str, Any],
    *,
    in_connection: bool,
    seen: tuple[str, ...],
) -> int:
    total = 0
    for on, node in _fields(schema, parent, selection_set, fragments, seen):
        name = node.name.value
        if name.startswith("__") or node.selection_set is None:
            continue  # introspection and leaves
        fields = getattr(on, "fields", None) or {}
        definition = fields.get(name)
        if definition is None:
            continue
        size = _size(definition, node, values, in_connection=in_connection)
        count = multiplier * size
        returned = get_named_type(definition.type)
        connection = isinstance(returned, GraphQLObjectType) and "pageInfo" in returned.fields
        total += count
        total += _cost(
            schema, returned, node.selection_set, count, fragments, values, in_connection=connection, seen=seen
        )
    return total


def _size(definition: Any, node: FieldNode, values: dict[str, Any], *, in_connection: bool) -> int:
    if any(arg in definition.args for arg in PAGE_ARGUMENTS):
        for argument in node.arguments or ():
            if argument.name.value in PAGE_ARGUMENTS:
                raw: Any
                if isinstance(argument.value, VariableNode):
                    raw = values.get(argument.value.name.value)
                elif isinstance(argument.value, IntValueNode):
                    raw = int(argument.value.value)
                else:
                    raw = None
                # graphql-core coerces a whole float (500.0) to an Int; anything unreadable here is
                # refused by coercion later, so count it as the largest page meanwhile.
                if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 <= raw < float("inf"):
                    return min(int(raw), MAX_PAGE) or 1
                return MAX_PAGE
        return DEFAULT_PAGE
    type_ = definition.type.of_type if isinstance(definition.type, GraphQLNonNull) else definition.type
    if isinstance(type_, GraphQLList):
        return 1 if in_connection else _declared_bound(definition) or UNPAGED_LIST
    return 1


def _declared_bound(definition: Any) -> int | None:
    field = (definition.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    bound = (getattr(field, "metadata", None) or {}).get(MAX_ITEMS)
    return bound if isinstance(bound, int) else None


class CostLimit(SchemaExtension):
    """Refuse, before any resolver runs, an operation whose cost is over the limit."""

    def __init__(self, *, max_cost: int) -> None:
        self.max_cost = max_cost

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        if self.max_cost > 0 and ec.graphql_document is not None:
            cost = operation_cost(ec.schema._schema, ec.graphql_document, ec.operation_name, ec.variables)
            if cost > self.max_cost:
                metrics.REFUSED.labels("cost").inc()
                raise QueryTooCostly(
                    f"this operation could return up to {cost} objects, over the limit of {self.max_cost}: "
                    "ask for smaller pages (`first`) or fewer nested lists",
                    cost=cost,
                    maxCost=self.max_cost,
                )
        yield
