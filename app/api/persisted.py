"""Persisted operations: the documents of `graphql/` registered at start-up, and APQ.

Each named operation in a `.graphql` file under LODGE_PERSISTED_OPERATIONS_DIR becomes a
standalone document (the operation and the fragments it uses, printed by graphql-core), known by
the SHA-256 of that text; `lodge persisted-operations` prints the manifest clients use.

Over HTTP, clients send `{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "..."}}}`
without a query (Apollo's automatic persisted queries): a known hash runs its document; an unknown
one is answered PERSISTED_QUERY_NOT_FOUND, and the client sends the query with its hash once, which
registers it in this process once it validates (unless only registered operations may run).
strawberry's websocket protocols carry no `extensions`: over a websocket the query is sent in full.

With LODGE_PERSISTED_ONLY, every operation must be a registered one, sent by hash or in full (in
any formatting: documents are compared by their printed form), over HTTP and websockets alike.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    OperationDefinitionNode,
    parse,
    print_ast,
    visit,
)
from graphql.language import Visitor
from strawberry.extensions import SchemaExtension

from app.api.errors import BadUserInput, Forbidden, LodgeError
from app.observability import metrics

NOT_FOUND_CODE = "PERSISTED_QUERY_NOT_FOUND"
_HASH = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,127}$")
# Queries clients register by hash: each at most this long, all of them at most this much memory.
MAX_APQ_BYTES = 64 * 1024
MAX_APQ_CACHE_BYTES = 32 * 1024 * 1024


class PersistedQueryNotFound(LodgeError):
    code = NOT_FOUND_CODE


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Registry:
    documents: dict[str, str] = field(default_factory=dict)  # hash -> canonical text
    names: dict[str, str] = field(default_factory=dict)  # hash -> operation name
    apq_capacity: int = 10_000
    _apq: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _apq_bytes: int = 0

    @classmethod
    def from_directory(cls, directory: Path | None) -> Registry:
        registry = cls()
        if directory is None or not directory.is_dir():
            return registry
        for path in sorted(directory.glob("*.graphql")):
            document = parse(path.read_text())
            for name, text in standalone_operations(document):
                digest = sha256(text)
                registry.documents[digest] = text
                registry.names[digest] = name
        return registry

    def lookup(self, digest: str) -> str | None:
        if (text := self.documents.get(digest)) is not None:
            return text
        if (text := self._apq.get(digest)) is not None:
            self._apq.move_to_end(digest)
        return text

    def remember(self, digest: str, text: str) -> None:
        if digest in self._apq:
            self._apq.move_to_end(digest)
            return
        self._apq[digest] = text
        self._apq_bytes += len(text)
        while len(self._apq) > self.apq_capacity or self._apq_bytes > MAX_APQ_CACHE_BYTES:
            _, dropped = self._apq.popitem(last=False)
            self._apq_bytes -= len(dropped)

    def is_registered(self, document: DocumentNode, operation_name: str | None) -> bool:
        text = standalone(document, operation_name)
        return text is not None and sha256(text) in self.documents

    def manifest(self) -> dict[str, dict[str, str]]:
        return {digest: {"name": self.names[digest], "document": text} for digest, text in self.documents.items()}


def _fragments_used(node: Any) -> Iterator[str]:
    found: list[str] = []

    class Spreads(Visitor):
        def enter_fragment_spread(self, spread: FragmentSpreadNode, *_: Any) -> None:
            found.append(spread.name.value)

    visit(node, Spreads())
    yield from found


def _standalone_of(operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]) -> str:
    needed: dict[str, FragmentDefinitionNode] = {}
    pending = list(_fragments_used(operation))
    while pending:
        name = pending.pop()
        if name in needed or name not in fragments:
            continue
        needed[name] = fragments[name]
        pending.extend(_fragments_used(fragments[name]))
    definitions = [operation, *(needed[name] for name in sorted(needed))]
    return print_ast(DocumentNode(definitions=tuple(definitions)))


def standalone_operations(document: DocumentNode) -> Iterator[tuple[str, str]]:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.name is not None:
            yield definition.name.value, _standalone_of(definition, fragments)


def standalone(document: DocumentNode, operation_name: str | None) -> str | None:
    """The printed form of the operation a request runs, with its fragments."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [d for d in operations if d.name is not None and d.name.value == operation_name]
    if len(operations) != 1:
        return None
    return _standalone_of(operations[0], fragments)


class PersistedOperations(SchemaExtension):
    def __init__(self, *, registry: Registry, only: bool, apq: bool) -> None:
        self.registry = registry
        self.only = only
        self.apq = apq
        self._error: LodgeError | None = None

    def on_operation(self) -> Iterator[None]:
        self._error = None
        self._to_remember: tuple[str, str] | None = None
        ec = self.execution_context
        request = (ec.operation_extensions or {}).get("persistedQuery")
        if request is not None:
            self._resolve(request)
        yield

    def _resolve(self, request: Any) -> None:
        ec = self.execution_context
        digest = request.get("sha256Hash") if isinstance(request, dict) else None
        if not isinstance(digest, str) or not _HASH.match(digest) or request.get("version", 1) != 1:
            self._fail(BadUserInput("persistedQuery needs version 1 and a sha256Hash of 64 hex digits"))
            return
        if ec.query:
            if sha256(ec.query) != digest:
                self._fail(BadUserInput("the sha256Hash does not match the query", sha256Hash=digest))
            elif self.apq and not self.only and len(ec.query) <= MAX_APQ_BYTES:
                self._to_remember = (digest, ec.query)  # once it has passed validation
            return
        text = self.registry.lookup(digest) if (self.apq or self.only) else None
        if text is None:
            self._fail(PersistedQueryNotFound("PersistedQueryNotFound", sha256Hash=digest))
            return
        ec.query = text

    def _fail(self, error: LodgeError) -> None:
        self._error = error
        ec = self.execution_context
        if not ec.query:
            # Past strawberry's "no query" check and its operation lookup (a client that names its
            # operation, as Apollo's link does, would get HTTP 400 "Unknown operation named X"
            # instead of this error); the error replaces the validation's result.
            ec.query = _placeholder(ec.operation_name)

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        if self._error is not None:
            ec.pre_execution_errors = [_graphql_error(self._error)]
        elif self.only and not ec.pre_execution_errors and ec.graphql_document is not None:
            if not self.registry.is_registered(ec.graphql_document, ec.operation_name):
                metrics.REFUSED.labels("persisted").inc()
                ec.pre_execution_errors = [
                    _graphql_error(
                        Forbidden(
                            "only registered operations may run here (LODGE_PERSISTED_ONLY): "
                            "send one of the documents of `lodge persisted-operations`"
                        )
                    )
                ]
        yield
        if self._to_remember is not None and not ec.pre_execution_errors:
            self.registry.remember(*self._to_remember)


def _placeholder(operation_name: str | None) -> str:
    """A document that stands in for a query the request did not carry, named as the request
    names its operation (a name that is no GraphQL name matches no document: strawberry says so)."""
    if operation_name is not None and _NAME.match(operation_name):
        return f"query {operation_name} {{ __typename }}"
    return "{ __typename }"


def _graphql_error(error: LodgeError) -> GraphQLError:
    return GraphQLError(error.message, original_error=error, extensions=error.extensions)
