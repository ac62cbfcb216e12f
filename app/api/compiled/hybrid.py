"""Hybrid answers: a compiled root field whose selection has fields that need Python.

The statement writes every compiled field, leaves the others out, and gives each object that has
such a field (a *hole*) its row as JSON under the key "\\u0000" + its type's name
(planner.ROW_KEY). `tree` decodes the text once and wraps it for graphql-core:

- an object on a path to a hole becomes a `Hybrid`: its compiled values, and the source its
  resolvers run on, `from_model` of the row (columns converted to what asyncpg would read);
- anything else (a compiled subtree) becomes `Precompleted`, which the executor passes through
  as it is (it is JSON already: a second completion would try to serialise a string as a
  DateTime).

graphql-core then completes the tree (runtime.CompiledRoots): Python fields, their errors with
paths and list indices, and null propagation are its own. The statement count for the compiled
part stays 1.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import inspect as sa_inspect

from app.api.compiled.declare import TYPES

ROW = "\x00"  # planner.ROW_KEY once decoded: the type's name follows it


class Precompleted:
    """A compiled value: already what the response holds."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Hybrid:
    """An object with holes: compiled values by response key, and the source its holes' resolvers
    run on (None for an object on the way to a hole: a connection, an edge)."""

    __slots__ = ("source", "values")

    def __init__(self, values: dict[str, Any], source: Any) -> None:
        self.values = values
        self.source = source


def tree(text: str) -> Any:
    """The decoded answer, with objects on a path to a hole as `Hybrid` (see the module). Raises if
    the text or a row does not decode (a number beyond a double, a value `from_model` refuses):
    the caller then hands the whole root to the resolver path, which reports it as ever."""
    return _wrap(orjson.loads(text))[0]


def _source(type_name: str, row: dict[str, Any]) -> Any:
    """`from_model` of the row, as the resolvers build it from what asyncpg reads."""
    decl = TYPES[type_name]
    model, convert = _converters(type_name)
    values = {attribute: to(row.get(column)) for column, attribute, to in convert}
    return decl.cls.from_model(model(**values))  # type: ignore[attr-defined]


def _wrap(value: Any) -> tuple[Any, bool]:
    """(the value wrapped, whether it holds a hole)."""
    if isinstance(value, dict):
        source = None
        for key in value:
            if key.startswith(ROW):
                source = _source(key[len(ROW) :], value.pop(key))
                break
        wrapped = {key: _wrap(item) for key, item in value.items()}
        if source is not None or any(holes for _, holes in wrapped.values()):
            return Hybrid({key: item for key, (item, _) in wrapped.items()}, source), True
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


def _real(value: Any) -> float:
    """float4 as asyncpg widens it (to_json prints 0.1, asyncpg reads 0.10000000149011612)."""
    return float(struct.unpack("f", struct.pack("f", float(value)))[0])


def _timestamp(value: str) -> datetime:
    """to_json writes the session's TimeZone; asyncpg reads UTC."""
    return datetime.fromisoformat(value).astimezone(UTC)


# By SQLAlchemy type name: the column types whose JSON converts back exactly. A declared type with
# another column type gets no holes (`convertible`): its root keeps the resolvers.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "UUID": uuid.UUID,
    "DateTime": _timestamp,
    "Date": date.fromisoformat,
    "Double": _float,
    "Float": _float,
    "REAL": _real,
    "INET": _address,
    "Integer": _identity,
    "BigInteger": _identity,
    "SmallInteger": _identity,
    "Boolean": _identity,
    "Text": _identity,
    "String": _identity,
    "AutoString": _identity,
    "JSON": _identity,
    "JSONB": _identity,
}


def _converter(column_type: Any) -> Callable[[Any], Any] | None:
    name = type(column_type).__name__
    if name == "ARRAY":  # text arrays only: others would need their items converted
        item = type(column_type.item_type).__name__
        return _identity if item in ("Text", "String", "AutoString") else None
    return _CONVERT.get(name)


def convertible(model: type) -> bool:
    """Whether every column of `model` converts back from `to_json` exactly."""
    mapper: Any = sa_inspect(model)
    return all(_converter(prop.columns[0].type) is not None for prop in mapper.column_attrs)


@cache
def _converters(type_name: str) -> tuple[type, list[tuple[str, str, Callable[[Any], Any]]]]:
    """The model of a declared type, and per column: its name in the row's JSON, its attribute,
    and how its JSON value becomes what asyncpg would have given."""
    model = TYPES[type_name].model
    mapper: Any = sa_inspect(model)
    convert = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        to = _converter(column.type)
        assert to is not None, f"{type_name}.{prop.key}: planned although not convertible"
        convert.append((column.name, prop.key, _nullable(to)))
    return model, convert


def _nullable(to: Callable[[Any], Any]) -> Callable[[Any], Any]:
    if to is _identity:
        return to
    return lambda value: None if value is None else to(value)
