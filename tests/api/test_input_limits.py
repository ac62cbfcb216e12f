"""Every String and ID input has a maximum length: over it is BAD_USER_INPUT naming the field and the
bound, before any resolver runs (nothing written, nothing logged as an error).

The cases are generated from the schema, so an input added later is covered without editing this
file."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLString,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
)
from graphql.pyutils import Undefined
from sqlalchemy import func, select

from app.api.lengths import DEFAULT_MAX_LENGTH, MAX_ID_LENGTH, InputLengths
from app.api.schema import create_schema
from app.audit import models as audit_models
from tests.support import GraphQLWS, LiveServer, new_tenant, new_user

TEXT = (GraphQLString, GraphQLID)


@dataclass
class Case:
    root: str  # "query", "mutation" or "subscription"
    field_name: str
    field: GraphQLField
    argument: str
    steps: list[str]  # input field names from the argument down to the String
    path: str  # as the error names it
    bound: int


def _schema(server: LiveServer) -> GraphQLSchema:
    return create_schema(server.deps.settings)._schema


def _targets(
    type_: Any, steps: list[str], path: str, definition: GraphQLArgument | GraphQLInputField, seen: tuple[str, ...]
) -> Iterator[tuple[list[str], str, GraphQLArgument | GraphQLInputField]]:
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        yield from _targets(nullable.of_type, steps, f"{path}[0]", definition, seen)
    elif isinstance(nullable, GraphQLInputObjectType):
        if nullable.name in seen:
            return
        for name, field in nullable.fields.items():
            yield from _targets(field.type, [*steps, name], f"{path}.{name}", field, (*seen, nullable.name))
    elif nullable in TEXT:
        yield steps, path, definition


def cases(schema: GraphQLSchema, lengths: InputLengths) -> list[Case]:
    found = []
    roots = {"query": schema.query_type, "mutation": schema.mutation_type, "subscription": schema.subscription_type}
    for root, type_ in roots.items():
        assert type_ is not None
        for field_name, field in type_.fields.items():
            for argument_name, argument in field.args.items():
                for steps, path, definition in _targets(argument.type, [], argument_name, argument, ()):
                    bound = lengths.bound(definition)
                    assert bound is not None
                    found.append(Case(root, field_name, field, argument_name, steps, path, bound))
    return found


def dummy(type_: Any) -> Any:
    """A value that passes coercion: required fields only, each the simplest of its type."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        return [dummy(nullable.of_type)]
    if isinstance(nullable, GraphQLInputObjectType):
        return {
            name: dummy(field.type)
            for name, field in nullable.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
    if isinstance(nullable, GraphQLEnumType):
        return next(iter(nullable.values))
    name = nullable.name
    return {
        "String": "x",
        "ID": str(uuid.uuid4()),
        "Int": 1,
        "Float": 1.0,
        "Boolean": True,
        "DateTime": "2026-01-01T00:00:00+00:00",
        "JSON": {},
    }[name]


def with_long(type_: Any, steps: list[str], long: str) -> Any:
    """A valid value of `type_` holding `long` at the end of `steps`."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        return [with_long(nullable.of_type, steps, long)]
    if isinstance(nullable, GraphQLInputObjectType):
        value = dummy(nullable)
        value[steps[0]] = with_long(nullable.fields[steps[0]].type, steps[1:], long)
        return value
    return long


def literal(value: Any, type_: Any) -> str:
    """`value` written inline in a document."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        return "[" + ", ".join(literal(item, nullable.of_type) for item in value) + "]"
    if isinstance(nullable, GraphQLInputObjectType):
        fields = ", ".join(f"{k}: {literal(v, nullable.fields[k].type)}" for k, v in value.items())
        return "{" + fields + "}"
    if isinstance(nullable, GraphQLEnumType):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def operation(case: Case, long: str, *, inline: bool) -> tuple[str, dict[str, Any]]:
    values = {
        name: with_long(argument.type, case.steps, long) if name == case.argument else dummy(argument.type)
        for name, argument in case.field.args.items()
        if name == case.argument or isinstance(argument.type, GraphQLNonNull)
    }
    selection = "" if is_leaf_type(get_named_type(case.field.type)) else " { __typename }"
    if inline:
        arguments = ", ".join(f"{n}: {literal(v, case.field.args[n].type)}" for n, v in values.items())
        return f"{case.root} {{ {case.field_name}({arguments}){selection} }}", {}
    declared = ", ".join(f"${n}: {case.field.args[n].type}" for n in values)
    arguments = ", ".join(f"{n}: ${n}" for n in values)
    return f"{case.root}({declared}) {{ {case.field_name}({arguments}){selection} }}", values


def assert_refused(error: dict[str, Any], case: Case) -> None:
    assert error["extensions"]["code"] == "BAD_USER_INPUT", (case.path, error)
    assert error["extensions"]["field"] == case.path, error
    assert error["extensions"]["maxLength"] == case.bound, error
    assert f"{case.bound} characters" in error["message"], error


async def audit_rows(server: LiveServer) -> int:
    async with server.deps.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(audit_models.AuditLog)) or 0)


async def test_every_text_input_has_a_bound_and_over_it_is_bad_input(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    schema = _schema(server)
    found = cases(schema, InputLengths(server.deps.settings))
    t = await new_tenant(server)
    before = await audit_rows(server)
    with caplog.at_level(logging.WARNING, logger="lodge"):
        for case in (c for c in found if c.root != "subscription"):
            for inline in (False, True):
                query, variables = operation(case, "x" * (case.bound + 1), inline=inline)
                body = await server.gql(query, variables, token=t.token)
                assert body.get("data") in (None, {}), (case.path, body)
                assert_refused(body["errors"][0], case)
    assert await audit_rows(server) == before  # no mutation ran
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    names = {c.field_name for c in found}
    assert {"createEnvironment", "registerFile", "ingestLogs", "login", "updateMe", "upsertIntegration"} <= names
    assert (await server.http.get("/healthz")).status_code == 200


async def test_every_input_type_text_field_is_reachable(server: LiveServer) -> None:
    schema = _schema(server)
    found = cases(schema, InputLengths(server.deps.settings))
    reached: set[tuple[str, str]] = set()
    for case in found:
        type_: Any = case.field.args[case.argument].type
        for step in case.steps:
            named = get_named_type(type_)
            assert isinstance(named, GraphQLInputObjectType)
            reached.add((named.name, step))
            type_ = named.fields[step].type
    declared = {
        (name, field_name)
        for name, type_ in schema.type_map.items()
        if isinstance(type_, GraphQLInputObjectType)
        for field_name, field in type_.fields.items()
        if get_named_type(field.type) in TEXT
    }
    assert declared <= reached


async def test_subscription_arguments_are_bounded_too(server: LiveServer) -> None:
    schema = _schema(server)
    found = [c for c in cases(schema, InputLengths(server.deps.settings)) if c.root == "subscription"]
    assert found
    token = await new_user(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {token}") as ws:
        for case in found:
            query, variables = operation(case, "x" * (case.bound + 1), inline=False)
            op_id = await ws.subscribe(query, variables)
            message = await ws.receive()
            assert message["id"] == op_id and message["type"] in ("error", "next"), message
            errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            assert_refused(errors[0], case)
            if message["type"] == "next":
                assert (await ws.receive())["type"] == "complete"


async def test_defaults_bound_what_declares_nothing(server: LiveServer) -> None:
    """login declares no bound: the default holds; a nested field's cursor is an argument too."""
    long = "x" * (DEFAULT_MAX_LENGTH + 1)
    body = await server.gql("mutation($e: String!) { login(email: $e, password: $e) { accessToken } }", {"e": long})
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "email", "maxLength": DEFAULT_MAX_LENGTH}
    token = await new_user(server)
    nested = "query($a: String) { me { projects(after: $a) { totalCount } } }"
    error = (await server.gql(nested, {"a": long}, token=token))["errors"][0]
    assert error["extensions"]["field"] == "after" and error["extensions"]["maxLength"] == DEFAULT_MAX_LENGTH
    by_id = "query($id: ID!) { project(id: $id) { id } }"
    error = (await server.gql(by_id, {"id": "1" * (MAX_ID_LENGTH + 1)}, token=token))["errors"][0]
    assert error["extensions"]["field"] == "id" and error["extensions"]["maxLength"] == MAX_ID_LENGTH
    # Through a fragment, with the value in a variable's default.
    fragment = (
        """
    query($a: String = "%s") { ...F }
    fragment F on Query { me { projects(after: $a) { totalCount } } }
    """
        % long
    )
    assert (await server.gql(fragment, token=token))["errors"][0]["extensions"]["field"] == "after"
