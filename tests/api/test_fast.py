"""The executor's fast completion of plain objects gives exactly what graphql-core's path gives."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.api.sharing import SharingExecutor


@strawberry.enum
class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@strawberry.type
class Point:
    x: float
    y: float | None
    at: datetime
    mood: Mood
    label: str  # declared non-null; a None here must be the standard error
    tags: list[str]

    @strawberry.field
    def double(self) -> float:
        return self.x * 2

    @strawberry.field
    def scaled(self, factor: float) -> float:  # an argument: the normal path
        return self.x * factor


@strawberry.type
class Track:
    name: str
    points: list[Point]
    first: Point | None


def _points(broken: bool) -> list[Point]:
    at = datetime(2026, 11, 22, tzinfo=UTC)
    return [
        Point(x=1.5, y=None, at=at, mood=Mood.HAPPY, label="a", tags=["t"]),
        Point(x=2.0, y=3.0, at=at, mood=Mood.SAD, label=None if broken else "b", tags=[]),  # type: ignore[arg-type]
    ]


@strawberry.type
class Query:
    @strawberry.field
    def tracks(self, broken: bool = False) -> list[Track]:
        points = _points(broken)
        return [Track(name="one", points=points, first=points[0]), Track(name="two", points=[], first=None)]


QUERIES = [
    "{ tracks { name points { x y at mood label tags double } first { x } } }",
    "{ tracks { __typename n: name points { __typename a: x b: x scaled(factor: 3) } } }",
    "query($s: Boolean!) { tracks { name @skip(if: $s) points { x y @include(if: $s) } } }",
    "{ tracks { ...T } } fragment T on Track { name points { ...P } } fragment P on Point { x label }",
    "{ tracks(broken: true) { name points { x label } } }",
    "{ tracks(broken: true) { name first { label } points { label } } }",
]


def _run(executor: Any, query: str) -> dict[str, Any]:
    schema = strawberry.Schema(query=Query, execution_context_class=executor)
    result = schema.execute_sync(query, variable_values={"s": True})
    return {
        "data": result.data,
        "errors": [(e.message, e.path) for e in result.errors or []],
    }


@pytest.mark.parametrize("query", QUERIES)
def test_fast_completion_matches_graphql_core(query: str) -> None:
    assert _run(SharingExecutor, query) == _run(StrawberryGraphQLCoreExecutionContext, query)


def test_a_null_in_a_non_null_field_is_the_standard_error() -> None:
    result = _run(SharingExecutor, "{ tracks(broken: true) { points { label } } }")
    assert result["data"] is None
    assert result["errors"] == [
        ("Cannot return null for non-nullable field Point.label.", ["tracks", 0, "points", 1, "label"])
    ]


@strawberry.type
class Bag:
    name: str
    items: list[int]  # given a generator below: it can be read only once

    @strawberry.field
    def squares(self) -> list[int]:
        return (i * i for i in self.items_seen)  # type: ignore[return-value]

    items_seen: strawberry.Private[list[int]]


@strawberry.type
class BagQuery:
    @strawberry.field
    def bags(self) -> list[Bag]:
        return [
            # A null item makes the completion fail half-way through the generator.
            Bag(name="gen", items=(i for i in (0, None, 2)), items_seen=[1, 2]),  # type: ignore[arg-type]
            Bag(name="set", items={5}, items_seen=[3]),  # type: ignore[arg-type]
            Bag(name="range", items=range(2), items_seen=[]),  # type: ignore[arg-type]
        ]


@pytest.mark.parametrize("query", ["{ bags { name items squares } }", "{ bags { items } }", "{ bags { squares } }"])
def test_iterables_other_than_lists_reach_graphql_core_unread(query: str) -> None:
    def run(executor: Any) -> Any:
        result = strawberry.Schema(query=BagQuery, execution_context_class=executor).execute_sync(query)
        return result.data, [e.message for e in result.errors or []]

    fast = run(SharingExecutor)
    assert fast == run(StrawberryGraphQLCoreExecutionContext)
    if "items" in query:
        assert fast == (None, ["Cannot return null for non-nullable field Bag.items."])
    else:
        assert fast[0] == {"bags": [{"squares": [1, 4]}, {"squares": [9]}, {"squares": []}]}
