"""Every String and ID input has a maximum length, checked before any resolver runs.

A bound is declared next to the input field or argument, as strawberry metadata:

    name: str = strawberry.field(metadata=max_length(200))
    name: Annotated[str, strawberry.argument(metadata=max_length(200))]

For a `[String]` the bound is each item's. A String without a declared bound may hold
`DEFAULT_MAX_LENGTH` characters and an ID `MAX_ID_LENGTH`, so no input is ever unbounded. Stored
text needs a declared bound small enough for its column's indexes: a btree entry holds about 2,700
bytes, and a character may take four.

Variables and inline literals are both checked; an over-long value is BAD_USER_INPUT naming the
argument path (`field`) and the bound (`maxLength`), and nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema_converter import GraphQLCoreConverter

from app.api.errors import BadUserInput
from app.settings import Settings

MAX_LENGTH = "lodge.max_length"
DEFAULT_MAX_LENGTH = 1024
MAX_ID_LENGTH = 100


def max_length(limit: int | str) -> dict[str, int | str]:
    """Metadata bounding a String input (each item of a [String]) to `limit` characters; a str
    names the Settings field that holds the bound (`max_length("max_log_bytes")`)."""
    return {MAX_LENGTH: limit}


class InputLengths:
    """The bound of each String and ID argument and input field of one schema."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Keyed by id(): the schema this object serves keeps every definition alive.
        self._bounds: dict[int, int | None] = {}

    def bound(self, definition: GraphQLArgument | GraphQLInputField) -> int | None:
        """The most characters the input may hold (None: it is not a String or an ID)."""
        key = id(definition)
        if key not in self._bounds:
            self._bounds[key] = self._resolve(definition)
        return self._bounds[key]

    def _resolve(self, definition: GraphQLArgument | GraphQLInputField) -> int | None:
        named = get_named_type(definition.type)
        if named is GraphQLID:
            return MAX_ID_LENGTH
        if named is not GraphQLString:
            return None
        strawberry_definition = (definition.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        declared = (getattr(strawberry_definition, "metadata", None) or {}).get(MAX_LENGTH)
        if declared is None:
            return DEFAULT_MAX_LENGTH
        if isinstance(declared, str):
            return int(getattr(self.settings, declared))
        return int(declared)

    def check(
        self,
        schema: GraphQLSchema,
        document: Any,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> None:
        """Raise BadUserInput for the first over-long String or ID in the operation's arguments."""
        operation = _operation(document, operation_name)
        if operation is None:
            return  # execution reports it
        root = schema.get_root_type(operation.operation)
        if root is None:
            return
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        defaults: dict[str, ValueNode] = {
            d.variable.name.value: d.default_value
            for d in operation.variable_definitions or ()
            if d.default_value is not None
        }
        walk = _Walk(self, schema, fragments, variables or {}, defaults)
        walk.selections(root, operation.selection_set)


class InputLengthLimit(SchemaExtension):
    def __init__(self, *, lengths: InputLengths) -> None:
        self.lengths = lengths

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.graphql_document is not None:
            self.lengths.check(ec.schema._schema, ec.graphql_document, ec.operation_name, ec.variables)
        yield


def _operation(document: Any, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((d for d in operations if d.name is not None and d.name.value == name), None)


class _Walk:
    def __init__(
        self,
        lengths: InputLengths,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        defaults: dict[str, ValueNode],
    ) -> None:
        self.lengths = lengths
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.defaults = defaults
        self.seen: set[str] = set()

    def selections(self, parent: Any, selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                fields = getattr(parent, "fields", None) or {}
                field = fields.get(selection.name.value)
                if field is None:
                    continue  # __typename, introspection, or unknown (validation reports it)
                for argument in selection.arguments or ():
                    definition = field.args.get(argument.name.value)
                    if definition is not None:
                        self.node(argument.value, definition, argument.name.value)
                if selection.selection_set is not None:
                    self.selections(get_named_type(field.type), selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition is not None else parent
                self.selections(on or parent, selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in self.seen:
                    continue  # its arguments do not change with where it is spread
                self.seen.add(name)
                on = self.schema.get_type(fragment.type_condition.name.value) or parent
                self.selections(on, fragment.selection_set)

    def node(self, node: ValueNode, definition: GraphQLArgument | GraphQLInputField, path: str) -> None:
        self._node(node, definition.type, self.lengths.bound(definition), path)

    def _node(self, node: ValueNode, type_: Any, bound: int | None, path: str) -> None:
        if isinstance(node, VariableNode):
            name = node.name.value
            if name in self.variables:
                self._value(self.variables[name], type_, bound, path)
            elif name in self.defaults:
                self._node(self.defaults[name], type_, bound, path)
            return
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            items = node.values if isinstance(node, ListValueNode) else (node,)
            for index, item in enumerate(items):
                self._node(item, type_.of_type, bound, f"{path}[{index}]")
        elif isinstance(type_, GraphQLInputObjectType):
            if isinstance(node, ObjectValueNode):
                for field in node.fields:
                    definition = type_.fields.get(field.name.value)
                    if definition is not None:
                        self.node(field.value, definition, f"{path}.{field.name.value}")
        elif bound is not None and isinstance(node, StringValueNode):
            _check(node.value, bound, path)

    def _value(self, value: Any, type_: Any, bound: int | None, path: str) -> None:
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            items = value if isinstance(value, list) else (value,)
            for index, item in enumerate(items):
                self._value(item, type_.of_type, bound, f"{path}[{index}]")
        elif isinstance(type_, GraphQLInputObjectType):
            if isinstance(value, dict):
                for name, item in value.items():
                    definition = type_.fields.get(name)
                    if definition is not None:
                        self._value(item, definition.type, self.lengths.bound(definition), f"{path}.{name}")
        elif bound is not None and isinstance(value, str):
            _check(value, bound, path)


def _check(value: str, bound: int, path: str) -> None:
    if len(value) > bound:
        raise BadUserInput(f"{path} is longer than {bound} characters", field=path, maxLength=bound)
