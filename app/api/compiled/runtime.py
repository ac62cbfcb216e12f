"""Running compiled root fields inside graphql-core's execution.

`CompiledRoots` sits first in the executor's bases. A root field with a plan on the context
(`Context.compiled`, set by the lean pipeline for a prepared query) runs as one statement; its
JSON text goes into `data` as an `orjson.Fragment`, written to the response without being parsed.
Anything else, and every bail, runs the field's resolver as before.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from graphql import GraphQLObjectType

from app.api.compiled.planner import MARKER, Bail, RootPlan
from app.observability import metrics

log = logging.getLogger("lodge.plans")
MAX_LOGGED = 64  # statements logged per plan (LODGE_LOG_PLANS): variants are few


class CompiledRoots:
    """A mixin for graphql-core's Executor (strawberry's execution context)."""

    def execute_field(
        self, parent_type: GraphQLObjectType, source: Any, field_details_list: Any, path: Any, position_context: Any
    ) -> Any:
        if path.prev is None:
            plans: dict[str, RootPlan] | None = getattr(self.context_value, "compiled", None)  # type: ignore[attr-defined]
            plan = plans.get(path.key) if plans is not None else None
            if plan is not None:
                return self._compiled(plan, parent_type, source, field_details_list, path, position_context)
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
    ) -> Any:
        ctx = self.context_value  # type: ignore[attr-defined]
        outcome = "bail_before"
        try:
            # Only a plan with a visibility rule asks who is calling: a public read with a bad
            # token answers as the resolver does (which never asks).
            viewer = await ctx.user_id(ctx.session) if plan.needs_viewer else None
            sql, params = plan.render(self.variable_values, viewer)  # type: ignore[attr-defined]
            if ctx.deps.settings.log_plans and sql not in plan.seen and len(plan.seen) < MAX_LOGGED:
                plan.seen.add(sql)
                log.info("%s: %s (parameters %s)", plan.coordinate, sql, len(params))
            outcome = "bail_after"
            rows = await ctx.session.fetch_raw(sql, *params)
            text: str = rows[0][0]
            if MARKER in text:
                raise Bail
        except Exception as exc:
            if not isinstance(exc, Bail):
                log.debug("%s ran on the resolver path after: %r", plan.coordinate, exc)
            # A refusal, an unusual value, or a failed statement: the resolver path answers, and
            # words whatever error there is exactly as it always has.
            metrics.COMPILED_ROOTS.labels(outcome).inc()
            result = super().execute_field(  # type: ignore[misc]
                parent_type, source, field_details_list, path, position_context
            )
            return await result if self.is_awaitable(result) else result  # type: ignore[attr-defined]
        metrics.COMPILED_ROOTS.labels("compiled").inc()
        return orjson.Fragment(text)
