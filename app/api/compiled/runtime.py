"""Running compiled root fields.

`run_root` runs one root field's statement and gives its JSON text, or None when the resolver
path must answer (any bail: see planner.py). Two callers:

- the lean pipeline, for a query whose every root field compiled: it writes the response itself,
  and graphql-core does not run at all (unless a root bails or fails; then graphql-core runs the
  operation, with that root on its resolver or its failure reported, the roots already run
  spliced in as they were, and the rest compiled);
- `CompiledRoots`, first in the executor's bases, for a query with compiled and other root
  fields: a compiled root's text goes into `data` as an `orjson.Fragment`, written to the
  response without being parsed.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from graphql import GraphQLObjectType
from graphql.execution.executor import Executor, to_nodes
from graphql.execution.values import VariableValues

from app.api.compiled.hybrid import Hybrid, Precompleted, tree
from app.api.compiled.planner import MARKER, NOBODY, Bail, RootPlan
from app.observability import metrics

log = logging.getLogger("lodge.plans")
MAX_LOGGED = 64  # statements logged per plan (LODGE_LOG_PLANS): variants are few
COMPILED, HYBRID, BAIL_BEFORE, BAIL_AFTER, FAILED = (
    metrics.COMPILED_ROOTS.labels(o) for o in ("compiled", "hybrid", "bail_before", "bail_after", "failed")
)


async def run_root(ctx: Any, plan: RootPlan, variables: VariableValues, event: Any = None) -> Any:
    """The root field's JSON text (a hybrid plan's: decoded, `hybrid.tree`), or None: the resolver
    path answers (and words any error).

    A statement that fails (the database went away, a timeout) raises its error, to be reported
    at the root field as the resolver's would be: the resolver, run after it, would meet the same
    failure on a connection that may be gone."""
    try:
        # Only a plan with a visibility rule asks who is calling: a public read with a bad token
        # answers as the resolver does, which never asks.
        caller = await ctx.deps.compiled_caller(ctx) if plan.needs_viewer else NOBODY
        if plan.signed_in and caller.user_id is None:
            raise Bail
        sql, params = plan.render(variables, caller, event)
    except Exception as exc:  # a refusal of the arguments or of the caller
        if not isinstance(exc, Bail):
            log.debug("%s ran on the resolver path after: %r", plan.coordinate, exc)
        BAIL_BEFORE.inc()
        return None
    if ctx.deps.settings.log_plans and sql not in plan.seen and len(plan.seen) < MAX_LOGGED:
        plan.seen.add(sql)
        log.info("%s: %s (%d parameters)", plan.coordinate, sql, len(params))
    try:
        if event is not None:  # a subscription's event: its own statement, outside any transaction
            async with ctx.deps.db.reader_sessionmaker() as reader:
                rows = await reader.fetch_raw(sql, *params)
        else:
            rows = await ctx.session.fetch_raw(sql, *params)
    except Exception:
        FAILED.inc()
        raise
    text: str = rows[0][0]
    if MARKER in text:  # a value or a guard that the resolver reports as an error
        BAIL_AFTER.inc()
        return None
    if plan.hybrid:
        try:
            decoded = tree(text)
        except Exception as exc:  # a value or row the resolvers would report (or refuse): they answer
            log.debug("%s ran on the resolver path after decoding: %r", plan.coordinate, exc)
            BAIL_AFTER.inc()
            return None
        HYBRID.inc()
        return decoded
    COMPILED.inc()
    return text


class CompiledRoots:
    """A mixin for graphql-core's Executor (strawberry's execution context)."""

    def execute_field(
        self, parent_type: GraphQLObjectType, source: Any, field_details_list: Any, path: Any, position_context: Any
    ) -> Any:
        if type(source) is Hybrid:  # inside a hybrid answer: a compiled value, or a hole's resolver
            if path.key in source.values:
                return self._complete_compiled(
                    parent_type, source.values[path.key], field_details_list, path, position_context
                )
            source = source.source  # from_model of the row, built as the answer was decoded
        elif path.prev is None:
            plans: dict[str, RootPlan] | None = getattr(self.context_value, "compiled", None)  # type: ignore[attr-defined]
            plan = plans.get(path.key) if plans is not None else None
            if plan is not None:
                return self._compiled(plan, parent_type, source, field_details_list, path, position_context)
            events: dict[str, RootPlan] | None = self.__dict__.get("_event_plans")
            plan = events.get(path.key) if events else None
            if plan is not None and getattr(source, "row", None) is not None:
                return self._compiled(plan, parent_type, source, field_details_list, path, position_context, source.row)
        return super().execute_field(  # type: ignore[misc]
            parent_type, source, field_details_list, path, position_context
        )

    async def _compiled(
        self,
        plan: RootPlan,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
        event: Any = None,
    ) -> Any:
        ctx = self.context_value  # type: ignore[attr-defined]
        done = ctx.compiled_texts.pop(path.key, None) if ctx.compiled_texts else None
        if done is not None:
            return orjson.Fragment(done)
        try:
            failed = ctx.compiled_failures.pop(path.key, None) if ctx.compiled_failures else None
            if failed is not None:
                raise failed  # the pipeline ran it already: reported here, where graphql-core places it
            text = await run_root(ctx, plan, self.variable_values, event)  # type: ignore[attr-defined]
        except Exception as exc:
            field = self.schema.get_field(parent_type, field_details_list[0].node.name.value)  # type: ignore[attr-defined]
            self.handle_field_error(exc, field.type, field_details_list, path)  # type: ignore[attr-defined]
            return None
        if text is not None and plan.hybrid:  # the decoded answer, for graphql-core to complete
            completed = self._complete_compiled(parent_type, text, field_details_list, path, position_context)
            return await completed if self.is_awaitable(completed) else completed  # type: ignore[attr-defined]
        if text is not None:
            return orjson.Fragment(text)
        result = super().execute_field(  # type: ignore[misc]
            parent_type, source, field_details_list, path, position_context
        )
        return await result if self.is_awaitable(result) else result  # type: ignore[attr-defined]

    def _complete_compiled(
        self, parent_type: GraphQLObjectType, value: Any, field_details_list: Any, path: Any, position_context: Any
    ) -> Any:
        """Complete a (part of a) hybrid answer as graphql-core's execute_field completes a resolved
        value: errors are reported at the field, and null propagates as ever."""
        field = self.schema.get_field(parent_type, field_details_list[0].node.name.value)  # type: ignore[attr-defined]
        info = self.build_resolve_info(field, to_nodes(field_details_list), parent_type, path)  # type: ignore[attr-defined]
        try:
            completed = self.complete_value(field.type, field_details_list, info, path, value, position_context)
        except Exception as exc:
            self.handle_field_error(exc, field.type, field_details_list, path)  # type: ignore[attr-defined]
            return None
        if self.is_awaitable(completed):  # type: ignore[attr-defined]
            return self._awaited(completed, field.type, field_details_list, path)
        return completed

    async def _awaited(self, completed: Any, return_type: Any, field_details_list: Any, path: Any) -> Any:
        try:
            return await completed
        except Exception as exc:
            self.handle_field_error(exc, return_type, field_details_list, path)  # type: ignore[attr-defined]
            return None

    def complete_value(
        self, return_type: Any, field_details_list: Any, info: Any, path: Any, result: Any, position_context: Any
    ) -> Any:
        if type(result) is Precompleted:
            return result.value
        return super().complete_value(  # type: ignore[misc]
            return_type, field_details_list, info, path, result, position_context
        )

    def complete_object_value(
        self, return_type: Any, field_details_list: Any, info: Any, path: Any, result: Any, position_context: Any
    ) -> Any:
        if type(result) is Hybrid:  # graphql-core's own: the fast path reads attributes a Hybrid lacks
            return Executor.complete_object_value(
                self,  # type: ignore[arg-type]
                return_type,
                field_details_list,
                info,
                path,
                result,
                position_context,
            )
        return super().complete_object_value(  # type: ignore[misc]
            return_type, field_details_list, info, path, result, position_context
        )
