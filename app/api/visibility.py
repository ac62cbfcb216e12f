"""Which fields' values depend on who asks.

A field's value depends on the viewer when its resolver may answer differently for different
callers: a visibility rule (`User.email`), a permission-filtered list (`Project.apiKeys` for an
environment key), a `me`-like field. Anything that shares or caches a rendered result across
callers (subscription sharing today, compiled plans later) must know this.

The rule, safe by default:
- a plain field (no resolver, no extension) reads an attribute of an object already built, so it
  is as viewer-independent as the field that produced the object;
- a field with a resolver depends on the viewer, unless it is declared otherwise next to its
  definition with `metadata=VIEWER_INDEPENDENT` (the resolver must then ignore the caller), or
  is a relation declared for compiled reads (`app.api.compiled.declare`) with no visibility rule:
  the comparison suite holds the resolver to that declaration for every kind of caller.

A selection depends on the viewer when any field in it does, through fragments included.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
)

from app.api.compiled.declare import viewer_dependence

VIEWER = "lodge.viewer"
# For `strawberry.field(metadata=VIEWER_INDEPENDENT)`: this resolver answers the same to everyone.
VIEWER_INDEPENDENT: dict[str, Any] = {VIEWER: False}
_DEFINITION = "strawberry-definition"  # strawberry's back-reference on graphql-core fields


def field_depends_on_viewer(field: Any, parent: str | None = None) -> bool:
    """`field` is a graphql-core GraphQLField built by strawberry, of the type named `parent`."""
    definition = (field.extensions or {}).get(_DEFINITION)
    if definition is None:
        return True  # not strawberry's: nothing says it is safe
    declared = (definition.metadata or {}).get(VIEWER)
    if declared is None and parent is not None and not definition.extensions:
        declared = viewer_dependence(parent, definition.python_name)
    if declared is not None:
        return bool(declared)
    return definition.base_resolver is not None or bool(definition.extensions)


def selection_depends_on_viewer(
    schema: GraphQLSchema,
    parent: Any,
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    _seen: frozenset[str] = frozenset(),
) -> bool:
    """Whether any field selected under `parent` (a graphql-core type) depends on the viewer."""
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            name = selection.name.value
            if name.startswith("__"):
                continue  # introspection answers the same to everyone
            if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) or name not in parent.fields:
                return True  # unknown shape: assume the worst
            field = parent.fields[name]
            if field_depends_on_viewer(field, parent.name):
                return True
            child = get_named_type(field.type)
            if selection_depends_on_viewer(schema, child, selection.selection_set, fragments, _seen):
                return True
        elif isinstance(selection, InlineFragmentNode):
            target = schema.get_type(selection.type_condition.name.value) if selection.type_condition else parent
            if selection_depends_on_viewer(schema, target, selection.selection_set, fragments, _seen):
                return True
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None:
                return True
            if name in _seen:
                continue
            target = schema.get_type(fragment.type_condition.name.value)
            if selection_depends_on_viewer(schema, target, fragment.selection_set, fragments, _seen | {name}):
                return True
    return False
