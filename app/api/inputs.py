"""Input objects that arrive in resolvers as something else than their strawberry class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def built_by(build: Callable[[type, Mapping[str, Any], Any], Any]) -> Callable[[C], C]:
    """Class decorator, above `@strawberry.input`: resolvers receive `build(cls, value, context)`
    (value: graphql-core's coerced input, with GraphQL field names) instead of an instance.

    For hot inputs only: strawberry's generic conversion costs ~60 us per object, and graphql-core
    has already checked every field and type. Uses `StrawberryObjectDefinition.from_input`, the
    hook strawberry offers integrations (docs/private-apis.md)."""

    def apply(cls: C) -> C:
        cls.__strawberry_definition__.from_input = build  # type: ignore[attr-defined]
        return cls

    return apply
