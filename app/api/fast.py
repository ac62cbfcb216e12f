"""Complete plain objects without graphql-core's per-field machinery.

graphql-core executes every field of every object the same way: it builds a resolve-info object,
calls the resolver through strawberry's wrapper, checks for awaitables and dispatches on the
return type. For a list of a thousand locations that is most of a request's time, although
almost every field just reads an attribute.

For an object type whose selected fields are all *plain* (strawberry fields with no resolver, or a
synchronous resolver taking only `self`, no arguments, no field extensions, no permission
classes), the executor compiles the selection once per operation into a small function that reads
the attributes and serialises the leaves directly. Anything else (arguments, async or
info-taking resolvers, abstract types, `@defer`, middleware) keeps the normal path, and a value
the fast path cannot complete (a null where the schema says non-null, a leaf that does not
serialise) makes it hand that object back to the normal path, which produces the standard error.
The result is identical; only the work is less.

A value handed back is read again by the normal path, so a plain resolver may run twice for one
field: plain resolvers (`self` only, synchronous) must be pure reads of their object.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, is_leaf_type, is_object_type
from graphql.pyutils import Undefined

DEFINITION = "strawberry-definition"
Plan = Callable[[Any], dict[str, Any]]
Complete = Callable[[Any], Any]


class _Bail(Exception):
    """The fast path cannot complete this value: use the normal one."""


def _bail() -> Any:
    raise _Bail


class FastCompletion:
    """A mixin for graphql-core's Executor (strawberry's execution context)."""

    _fast_plans: dict[tuple[int, int], tuple[Any, Plan | None]]
    _fast_fields: dict[tuple[int, int], tuple[Any, tuple[Callable[[Any], Any], Complete] | None]]

    def execute_field(
        self, parent_type: GraphQLObjectType, source: Any, field_details_list: Any, path: Any, position_context: Any
    ) -> Any:
        """A plain field of an object that also has other fields: read and complete it here."""
        fields = self.__dict__.get("_fast_fields")
        if fields is None:
            fields = self._fast_fields = {}
        key = (id(parent_type), id(field_details_list))
        cached = fields.get(key)
        if cached is None:
            cached = fields[key] = (field_details_list, self._field_plan(parent_type, field_details_list))
        fast = cached[1]
        if fast is not None:
            read, complete = fast
            try:
                return complete(read(source))
            except Exception:  # the normal path below reports it properly
                pass
        return super().execute_field(  # type: ignore[misc]
            parent_type, source, field_details_list, path, position_context
        )

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._fast_plan(return_type, field_details_list)
        if plan is not None:
            try:
                return plan(result)
            except _Bail:
                pass
        return super().complete_object_value(  # type: ignore[misc]
            return_type, field_details_list, info, path, result, position_context
        )

    def _fast_plan(self, return_type: GraphQLObjectType, field_details_list: Any) -> Plan | None:
        plans = self.__dict__.get("_fast_plans")
        if plans is None:
            plans = self._fast_plans = {}
        key = (id(return_type), id(field_details_list))
        cached = plans.get(key)
        if cached is not None:
            return cached[1]
        plan = self._build_plan(return_type, field_details_list)
        # The list is kept alive with its plan, so that its id is not reused during the operation.
        plans[key] = (field_details_list, plan)
        return plan

    def _build_plan(self, return_type: GraphQLObjectType, field_details_list: Any) -> Plan | None:
        middleware = getattr(self, "middleware_manager", None)
        if return_type.is_type_of is not None or (middleware is not None and middleware.middlewares):
            return None  # a schema extension wraps every resolver: keep to the normal path
        grouped, defer_usages, *_ = self.collect_subfields(return_type, field_details_list)  # type: ignore[attr-defined]
        if defer_usages:
            return None
        steps: list[tuple[str, Callable[[Any], Any], Complete]] = []
        for response_name, details in grouped.items():
            field_plan = self._field_plan(return_type, details)
            if field_plan is None:
                return None
            steps.append((response_name, *field_plan))

        def plan(source: Any) -> dict[str, Any]:
            try:
                return {name: complete(read(source)) for name, read, complete in steps}
            except _Bail:
                raise
            except Exception:
                raise _Bail from None

        return plan

    def _field_plan(self, parent_type: GraphQLObjectType, details: Any) -> tuple[Callable[[Any], Any], Complete] | None:
        """How to read and complete one plain field, or None if it is not plain."""
        middleware = getattr(self, "middleware_manager", None)
        if middleware is not None and middleware.middlewares:
            return None
        name = details[0].node.name.value
        if name == "__typename":
            type_name = parent_type.name
            return (lambda _source: type_name), _identity
        field = parent_type.fields.get(name)
        if field is None or field.args or any(d.node.arguments or d.node.directives for d in details):
            return None
        read = _reader(field.extensions.get(DEFINITION))
        complete = self._completer(field.type, details) if read is not None else None
        if read is None or complete is None:
            return None
        return read, complete

    def _completer(self, type_: GraphQLOutputType, details: Any) -> Complete | None:
        if isinstance(type_, GraphQLNonNull):
            required = self._completer(type_.of_type, details)
            if required is None:
                return None
            return lambda value: _bail() if value is None else required(value)
        optional = self._completer_of_nullable(type_, details)
        if optional is None:
            return None
        return lambda value: None if value is None else optional(value)

    def _completer_of_nullable(self, type_: GraphQLOutputType, details: Any) -> Complete | None:
        if is_leaf_type(type_):
            serialize = type_.coerce_output_value  # what graphql-core's complete_leaf_value calls

            def leaf(value: Any) -> Any:
                serialized = serialize(value)
                if serialized is None or serialized is Undefined:
                    raise _Bail
                return serialized

            return leaf
        if isinstance(type_, GraphQLList):
            item = self._completer(type_.of_type, details)
            if item is None:
                return None
            # Only lists and tuples: they can be read twice. Anything else (a generator, a mapping,
            # a custom iterable) must reach graphql-core unread, since it may be consumed by reading.
            return lambda value: [item(v) for v in value] if type(value) in _SEQUENCES else _bail()
        if is_object_type(type_):
            assert isinstance(type_, GraphQLObjectType)
            plan = self._fast_plan(type_, details)
            return plan
        return None  # interfaces and unions take the normal path


_SEQUENCES = (list, tuple)


def _identity(value: Any) -> Any:
    return value


def _reader(definition: Any) -> Callable[[Any], Any] | None:
    """How to read a plain field from its source object, or None if the field is not plain."""
    if definition is None or definition.extensions or getattr(definition, "permission_classes", None):
        return None
    if definition.is_basic_field:
        return attrgetter(definition.python_name)
    resolver = definition.base_resolver
    if resolver is None or resolver.is_async or definition.arguments:
        return None
    if resolver.info_parameter is not None or resolver.root_parameter is not None:
        return None
    if resolver.self_parameter is None:
        return None
    func = resolver.wrapped_func
    return lambda source: func(source)
