"""The lean path for an ordinary GraphQL request over HTTP (issue 15).

strawberry runs every operation through a stack of schema extensions: twelve context managers
entered and left per request, each looking up its hooks, and a request object rebuilt at each
layer. For the requests that make up nearly all traffic (a JSON POST, or a GET, carrying a valid
query or mutation) this module does the same work in one pass:

1. The document is prepared once per (text, operation name) and kept in a bounded cache:
   parsed under the token limit, validated with the same rules as strawberry's path (graphql-core's,
   strawberry's, and the depth, alias and ingest rules), its operation found, and for an operation
   without variables its cost computed.
2. Per request: the variables' NUL check, the input-length check and the cost limit (when the cost
   depends on variables), then graphql-core executes with the same executor (sharing, fast
   completion) inside the same operation scope (`finish_operation`: lazy session, audit, commit,
   publish), then the errors are shaped as everywhere else and the answer written with orjson.

Anything else is handed to strawberry's view, unchanged: a document that does not parse or
validate, an unknown operation name, a subscription, a mutation by GET, a refusal by a limit, a
persisted-query hash that is not known yet, a multipart upload, GraphiQL's page, batched or
malformed bodies, and every websocket. Those requests are rare or already refused, and strawberry
words their errors as clients have always seen them. With `LODGE_OTEL=1` every request takes
strawberry's path too (its tracing extension makes the spans).

Whether a request took this path is invisible to the client: tests/api/test_pipeline.py runs the
same requests through both and compares the answers.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
)
from graphql.execution.values import VariableValues, get_variable_values
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.schema.schema import validate_document

from app.api.compiled.planner import CompiledOperation, VariantOperation, plan_operation
from app.api.compiled.runtime import run_root
from app.api.context import Context
from app.api.cost import operation_cost
from app.api.errors import LodgeError, shape_errors
from app.api.extensions import close_operation, finish_operation
from app.api.lengths import InputLengths
from app.api.persisted import sha256
from app.api.scalars import contains_nul
from app.api.sharing import SharingExecutor
from app.observability.graphql import record_operation

if TYPE_CHECKING:
    from app.api.schema import LodgeSchema
    from app.deps import Deps

CACHE_SIZE = 1024
# Documents longer than this are prepared every time (and are rare): the cache holds their text.
MAX_CACHED_DOCUMENT = 64 * 1024
JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Prepared:
    document: DocumentNode
    name: str | None  # the operation's name (for metrics and the access log)
    mutation: bool
    cost: int | None  # None: depends on the variables
    lengths_checked: bool  # no String or ID argument can be over its bound whatever the variables
    compiled: CompiledOperation | VariantOperation | None  # root fields that run as one SQL statement each


@dataclass(frozen=True)
class Call:
    """What one request asks for."""

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


class Pipeline:
    def __init__(self, deps: Deps, schema: LodgeSchema) -> None:
        settings = deps.settings
        self.deps = deps
        self.core = schema._schema
        self.rules = (*specified_rules, *schema.limit_rules)
        self.max_tokens = settings.max_query_tokens
        self.max_cost = settings.max_query_cost
        self.lengths = InputLengths(settings)
        self.registry = schema.registry
        self.persisted_only = settings.persisted_only
        self.apq = settings.apq
        self.enabled = settings.lean_pipeline and not settings.otel_enabled
        self.compiled_reads = settings.compiled_reads
        self._prepared: OrderedDict[tuple[str, str | None], Prepared | None] = OrderedDict()

    # -- the request ---------------------------------------------------------------------------
    async def handle(
        self, scope: Scope, receive: Receive, send: Send, fallback: Callable[[Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        """Serve the request, or hand it (with its body, already read) to `fallback`."""
        if not self.enabled or scope["type"] != "http":
            await fallback(scope, receive, send)
            return
        method = scope["method"]
        body = b""
        if method == "POST":
            headers = Headers(scope=scope)
            if headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
                await fallback(scope, receive, send)
                return
            try:
                body, receive = await _read_body(receive)
            except ClientDisconnect:
                return
            call = _call_from_body(body)
        elif method == "GET":
            call = _call_from_query_string(scope)
            if call is not None and b"text/html" in Headers(scope=scope).get("accept", "").encode("latin-1"):
                call = None  # perhaps GraphiQL's page: strawberry decides
        else:
            call = None
        if call is None:
            await fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        ctx = Context(deps=self.deps, request=request)
        prepared = self._prepare_call(call, get=method == "GET")
        if prepared is None or not self._admissible(prepared, call):
            await fallback(scope, receive, send)
            return
        payload = await self._run(ctx, prepared, call)
        response_headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    def _prepare_call(self, call: Call, *, get: bool) -> Prepared | None:
        query: str | None = call.query
        persisted = (call.extensions or {}).get("persistedQuery")
        if persisted is not None:
            query = self._persisted_text(call, persisted)
        if query is None:
            return None
        prepared = self.prepare(query, call.operation_name)
        if prepared is None or (get and prepared.mutation):
            return None
        return prepared

    def _persisted_text(self, call: Call, persisted: Any) -> str | None:
        """The text of a persisted-query request this path can run; None hands it to strawberry
        (a hash it does not know yet, a mismatch, an APQ registration: each has its own answer)."""
        if not isinstance(persisted, dict) or persisted.get("version", 1) != 1 or call.query:
            return None
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not (self.apq or self.persisted_only):
            return None
        text = self.registry.lookup(digest)
        return text if text is not None and sha256(text) == digest else None

    def is_prepared(self, query: str, operation_name: str | None) -> bool:
        """Whether this path has prepared the document to run (for tests and debugging)."""
        return self._prepared.get((query, operation_name)) is not None

    def prepare(self, query: str, operation_name: str | None) -> Prepared | None:
        """The prepared operation, or None when strawberry's path must answer (any error)."""
        key = (query, operation_name)
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        prepared = self._prepare(query, operation_name)
        if len(query) <= MAX_CACHED_DOCUMENT:
            self._prepared[key] = prepared
            if len(self._prepared) > CACHE_SIZE:
                self._prepared.popitem(last=False)
        return prepared

    def _prepare(self, query: str, operation_name: str | None) -> Prepared | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if validate_document(self.core, document, self.rules):
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation not in (OperationType.QUERY, OperationType.MUTATION):
            return None
        if self.persisted_only and not self.registry.is_registered(document, operation_name):
            return None
        static = not operation.variable_definitions
        cost = operation_cost(self.core, document, operation_name, None) if static else None
        if static:
            try:
                self.lengths.check(self.core, document, operation_name, None)
            except LodgeError:
                return None
        return Prepared(
            document=document,
            name=operation.name.value if operation.name is not None else None,
            mutation=operation.operation == OperationType.MUTATION,
            cost=cost,
            lengths_checked=static,
            compiled=plan_operation(self.core, document, operation) if self.compiled_reads else None,
        )

    def _admissible(self, prepared: Prepared, call: Call) -> bool:
        """The per-request checks of strawberry's path; a request that fails one is answered there."""
        if call.variables and contains_nul(call.variables):
            return False
        if not prepared.lengths_checked:
            try:
                self.lengths.check(self.core, prepared.document, call.operation_name, call.variables)
            except LodgeError:
                return False
            except Exception:  # variables of the wrong shape: graphql-core says so, in strawberry's path
                return False
        if self.max_cost > 0:
            cost = prepared.cost
            if cost is None:
                try:
                    cost = operation_cost(self.core, prepared.document, call.operation_name, call.variables)
                except Exception:
                    return False
            if cost > self.max_cost:
                return False
        return True

    async def _run(self, ctx: Context, prepared: Prepared, call: Call) -> bytes:
        started = time.perf_counter()
        token = ctx.open_scope(lazy=True, read_only=not prepared.mutation)
        compiled = None
        variables = None
        if prepared.compiled is not None:
            coerced = get_variable_values(
                self.core, prepared.compiled.operation.variable_definitions or (), call.variables or {}
            )
            if not isinstance(coerced, list):  # else graphql-core reports the variables' errors
                variables = coerced
                compiled = prepared.compiled.for_variables(coerced)
        ctx.compiled = compiled.roots if compiled is not None else None
        scope = ctx.scope
        raised: BaseException | None = None
        result: ExecutionResult | None = None
        try:
            if compiled is not None and variables is not None and compiled.whole:
                payload = await _compiled_answer(ctx, compiled, variables)
                if payload is not None:
                    result = ExecutionResult(data={}, errors=None)
                    await finish_operation(ctx, scope, result, mutation=False)
                    return payload
            outcome = execute(
                self.core,
                prepared.document,
                variable_values=call.variables,
                operation_name=call.operation_name,
                context_value=ctx,
                is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
                executor_class=SharingExecutor,
                operation_extensions=call.extensions,
            )
            done = await outcome if isinstance(outcome, Awaitable) else outcome
            result = done
            if done.errors:
                shape_errors(done.errors, _Described(ctx, call.operation_name))
            await finish_operation(ctx, scope, done, mutation=prepared.mutation)
        except LodgeError as exc:  # the commit failed (CommitFailed), said as strawberry's path says it
            raised = exc
            error = GraphQLError(str(exc), original_error=exc)
            result = ExecutionResult(data=None, errors=[error])
        except BaseException as exc:
            raised = exc
            raise
        finally:
            await close_operation(scope)
            ctx.close_scope(token)
            kind = "mutation" if prepared.mutation else "query"
            record_operation(ctx, kind, prepared.name, time.perf_counter() - started, result=result, raised=raised)
        assert result is not None
        return _encode(result)


async def _compiled_answer(ctx: Context, compiled: CompiledOperation, variables: VariableValues) -> bytes | None:
    """The answer of a query whose every root field compiled, written without graphql-core; None
    if a variable does not coerce or a root bails (graphql-core then runs the operation)."""
    parts = []
    done: dict[str, str] = {}
    for key, plan in compiled.roots.items():
        try:
            text = await run_root(ctx, plan, variables)
        except Exception as exc:
            ctx.compiled_failures = {key: exc}  # graphql-core reports it, placed and shaped as ever
            ctx.compiled_texts = done
            return None
        if text is None:
            # graphql-core runs the operation: this root on its resolver (errors worded as ever),
            # the roots already run spliced in as they are, the others compiled.
            ctx.compiled = {name: root for name, root in compiled.roots.items() if name != key}
            ctx.compiled_texts = done
            return None
        done[key] = text
        parts.append(f'"{key}":{text}')
    return ('{"data":{' + ",".join(parts) + "}}").encode()


@dataclass(frozen=True)
class _Described:
    """What `shape_errors` reads of strawberry's execution context."""

    context: Context
    operation_name: str | None


def _encode(result: ExecutionResult) -> bytes:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return json_bytes(body)


def json_bytes(data: object) -> bytes:
    """A response's JSON: orjson, several times faster than json (every subscriber's frame is
    encoded too); an integer beyond 64 bits (from an inline literal) goes to the slow encoder."""
    try:
        return orjson.dumps(data, default=str)
    except TypeError:
        if _holds_fragment(data):
            raise  # a compiled root's text cannot go through json (it would be written as its repr)
        return json.dumps(data, default=str).encode()


def _holds_fragment(data: object) -> bool:
    if isinstance(data, orjson.Fragment):
        return True
    if isinstance(data, dict):
        return any(_holds_fragment(v) for v in data.values())
    if isinstance(data, list):
        return any(_holds_fragment(v) for v in data)
    return False


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that gives it again (to strawberry's view, if it is handed
    the request). `Edge`, outside, bounds what is read."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            # The client left before its whole body arrived: run nothing of it, answer nobody.
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _call_from_body(body: bytes) -> Call | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _call(data) if isinstance(data, dict) else None


def _call_from_query_string(scope: Scope) -> Call | None:
    params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    data: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
    for name in ("variables", "extensions"):
        if (raw := params.get(name)) is not None:
            try:
                data[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
    return _call(data)


def _call(data: dict[str, Any]) -> Call | None:
    query = data.get("query")
    variables = data.get("variables")
    operation_name = data.get("operationName")
    extensions = data.get("extensions")
    if query is None and isinstance(extensions, dict) and "persistedQuery" in extensions:
        query = ""
    if not isinstance(query, str) or (not query and extensions is None):
        return None
    if variables is not None and not isinstance(variables, dict):
        return None
    if operation_name is not None and not isinstance(operation_name, str):
        return None
    if extensions is not None and not isinstance(extensions, dict):
        return None
    return Call(query=query, variables=variables, operation_name=operation_name, extensions=extensions)
