"""Hybrid answers: a compiled root field whose selection has fields that need Python.

The statement writes every compiled field, leaves the others out, and gives each object that has
such a field (a *hole*) its row as JSON under the key "\\u0000row" (planner.ROW_KEY). `tree`
decodes the text once and wraps it for graphql-core:

- an object on a path to a hole becomes a `Hybrid`: its compiled values, and the source its
  resolvers run on, `from_model` of the row, built on first use;
- anything else (a compiled subtree) becomes `Precompleted`, which the executor passes through
  as it is (it is JSON already: a second completion would try to serialise a string as a
  DateTime).

graphql-core then completes the tree (runtime.CompiledRoots): Python fields, their errors with
paths and list indices, and null propagation are its own. The statement count for the compiled
part stays 1.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import inspect as sa_inspect

from app.api.compiled.declare import TYPES

ROW = "\x00row"  # planner.ROW_KEY once decoded


class Precompleted:
    """A compiled value: already what the response holds."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Hybrid:
    """An object with holes: compiled values by response key, and its row for the resolvers."""

    __slots__ = ("_source", "row", "values")

    def __init__(self, values: dict[str, Any], row: dict[str, Any] | None) -> None:
        self.values = values
        self.row = row  # None for an object on the way to a hole (a connection, an edge)
        self._source: Any = None

    def source(self, type_name: str) -> Any:
        """The strawberry object the resolvers of this object's holes run on."""
        if self._source is None:
            assert self.row is not None, f"{type_name}: a hole without a row"
            decl = TYPES[type_name]
            model, convert = _converters(type_name)
            self._source = decl.cls.from_model(  # type: ignore[attr-defined]
                model(**{attribute: to(self.row.get(column)) for column, attribute, to in convert})
            )
        return self._source


def tree(text: str) -> Any:
    """The decoded answer, with objects on a path to a hole as `Hybrid` (see the module)."""
    return _wrap(orjson.loads(text))[0]


def _wrap(value: Any) -> tuple[Any, bool]:
    """(the value wrapped, whether it holds a hole)."""
    if isinstance(value, dict):
        row = value.pop(ROW, None)
        wrapped = {key: _wrap(item) for key, item in value.items()}
        if row is not None or any(holes for _, holes in wrapped.values()):
            return Hybrid({key: item for key, (item, _) in wrapped.items()}, row), True
        return Precompleted(value), False
    if isinstance(value, list):
        items = [_wrap(item) for item in value]
        if any(holes for _, holes in items):
            return [item for item, _ in items], True
        return Precompleted(value), False
    return Precompleted(value), False


def _identity(value: Any) -> Any:
    return value


def _address(value: str) -> Any:
    """inet as asyncpg reads it: an address, or an interface when it has a prefix."""
    return ipaddress.ip_interface(value) if "/" in value else ipaddress.ip_address(value)


def _float(value: Any) -> float:
    return float(value)  # JSON numbers, and "NaN" / "Infinity" as to_json writes them


_CONVERT: dict[type, Callable[[Any], Any]] = {
    uuid.UUID: uuid.UUID,
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
    float: _float,
}


@cache
def _converters(type_name: str) -> tuple[type, list[tuple[str, str, Callable[[Any], Any]]]]:
    """The model of a declared type, and per column: its name in the row's JSON, its attribute,
    and how its JSON value becomes what asyncpg would have given."""
    model = TYPES[type_name].model
    mapper: Any = sa_inspect(model)
    convert = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if type(column.type).__name__ == "INET":
            to: Callable[[Any], Any] = _address
        else:
            try:
                python_type = column.type.python_type
            except NotImplementedError:
                python_type = object
            to = _CONVERT.get(python_type, _identity)
        convert.append((column.name, prop.key, _nullable(to)))
    return model, convert


def _nullable(to: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if to is _identity:
        return to
    return lambda value: None if value is None else to(value)
