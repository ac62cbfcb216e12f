"""Execute a subscription event once for every subscriber that asked the same thing.

A live event is usually delivered to many subscribers with the same document and variables.
graphql-core executes the selection set once per subscriber; for an event wrapped in
`SharedEvent` this executor computes the result once per (document, variables) and hands the
same result to every subscriber that may see it: a selection whose fields depend on the viewer
(`app.api.visibility`) is shared only among subscribers holding the same credential, a
viewer-independent one among everyone. Wrap only events every subscriber of the stream may
receive (access is checked before the event is yielded); what each may see of it is the
selection's business.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import DocumentNode, ExecutionResult, FieldNode, VariableNode, Visitor, get_named_type, visit
from graphql.execution import Executor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.api.compiled.planner import plan_operation
from app.api.compiled.runtime import CompiledRoots
from app.api.fast import FastCompletion
from app.api.visibility import selection_depends_on_viewer
from app.observability import metrics

MISSING = object()


class SharedEvent:
    """A live event and its renderings by share key. Made once per bus message for all the
    subscribers in the process (`app.pubsub.Delivery.shared`), so that they find each other's."""

    __slots__ = ("_results", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._results: dict[tuple[int, str, str | None], asyncio.Future[Any]] = {}


def forget_per_event_memos(executor: Any) -> None:
    executor.__dict__["_relevant_sub_fields"] = {}
    executor.__dict__.pop("_fast_plans", None)
    executor.__dict__.pop("_fast_fields", None)


class SharingExecutor(CompiledRoots, FastCompletion, StrawberryGraphQLCoreExecutionContext):
    _shared: SharedEvent | None = None
    _share_key: tuple[int, str, str | None] | None = None

    def _event_plans_once(self) -> Any:
        """The compiled renderings of this subscription's events (app.api.compiled: a selection
        that reaches other tables), planned once per subscription; None when none compiles."""
        plans = self.__dict__.get("_event_plans", MISSING)
        if plans is MISSING:
            plans = None
            deps = getattr(self.context_value, "deps", None)  # None: executed outside Lodge's context
            if deps is not None and deps.settings.compiled_reads:
                document = DocumentNode(definitions=(self.operation, *self.fragment_definitions.values()))
                planned = plan_operation(self.schema, document, self.operation)
                compiled = planned.for_variables(self.variable_values) if planned is not None else None
                plans = compiled.roots if compiled is not None else None
            self.__dict__["_event_plans"] = plans
        return plans

    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        if isinstance(payload, SharedEvent):
            if self._share_key is None:
                # Document, variables and caller are fixed for the life of a subscription: key
                # them once. A rendering that depends on the viewer is shared only within one
                # principal (the same credential); any other among every subscriber.
                principal = self.context_value.principal() if self._depends_on_viewer() else None
                self._share_key = (id(self.operation), self._rendering_variables(), principal)
            executor = super().build_per_event_executor(payload.value)
            executor._shared = payload  # type: ignore[attr-defined]
        else:
            executor = super().build_per_event_executor(payload)
        executor.__dict__["_event_plans"] = self._event_plans_once()
        # graphql-core copies the subscription's executor shallowly: without fresh memos, every
        # event would add its field lists to the subscription's (keyed by the lists' ids, never
        # evicted), about 1.3 KiB per delivered event for as long as the subscription lives.
        forget_per_event_memos(executor)
        return executor

    def _depends_on_viewer(self) -> bool:
        """Whether anything selected below the root field depends on who receives the event.

        The root field's own resolver chose the events (and checked access); it renders none."""
        root = self.schema.subscription_type
        for selection in self.operation.selection_set.selections:
            if not isinstance(selection, FieldNode) or root is None:
                return True  # a fragment at the root: rare, so no sharing rather than a second walker
            field = root.fields.get(selection.name.value)
            if field is None:
                return True
            child = get_named_type(field.type)
            if selection_depends_on_viewer(self.schema, child, selection.selection_set, self.fragment_definitions):
                return True
        return False

    def _rendering_variables(self) -> str:
        """The variables that shape an event's rendering: those used below the root field.

        The root field's own arguments (a resume cursor, a filter) decide which events a
        subscriber gets, not how an event renders, and differ between clients.
        """
        names: set[str] = set()

        class Collect(Visitor):
            def enter_variable(self, node: VariableNode, *_: Any) -> None:
                names.add(node.name.value)

        for selection in self.operation.selection_set.selections:
            if isinstance(selection, FieldNode):
                for part in (selection.selection_set, *(selection.directives or ())):
                    if part is not None:
                        visit(part, Collect())
            else:
                visit(selection, Collect())
        for fragment in self.fragment_definitions.values():
            visit(fragment, Collect())
        used = {name: self.variable_values.coerced.get(name) for name in sorted(names)}
        return json.dumps(used, sort_keys=True, default=str)

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = self._shared
        if shared is None:
            return super().execute_operation(serially)
        key = self._share_key
        assert key is not None
        future = shared._results.get(key)
        metrics.SHARED_RENDERS.labels("reused" if future is not None else "executed").inc()
        if future is None:
            result = super().execute_operation(serially)
            if self.is_awaitable(result):
                future = asyncio.ensure_future(result)
            else:
                future = asyncio.get_running_loop().create_future()
                future.set_result(result)
            shared._results[key] = future
        # shield: one subscriber leaving must not cancel the result the others are waiting for.
        return _await_shared(future)


async def _await_shared(future: asyncio.Future[Any]) -> ExecutionResult:
    result: ExecutionResult = await asyncio.shield(future)
    # Each subscriber gets its own envelope (strawberry processes errors in place).
    return ExecutionResult(data=result.data, errors=list(result.errors) if result.errors else None)
