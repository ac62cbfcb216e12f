"""The one schema: every domain's Query, Mutation and Subscription merged at the root."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.tools import merge_types

from app.accounts.resolvers import AccountsMutation, AccountsQuery
from app.api.extensions import ErrorPolicy, OperationScopeExtension
from app.logs.resolvers import LogsMutation, LogsQuery, LogsSubscription
from app.settings import Settings

Query = merge_types("Query", (AccountsQuery, LogsQuery))
Mutation = merge_types("Mutation", (AccountsMutation, LogsMutation))
Subscription = merge_types("Subscription", (LogsSubscription,))


class LodgeSchema(strawberry.Schema):
    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        # ErrorPolicy logs what deserves it (unexpected errors, with their request id); client
        # mistakes are not server errors.
        return None


def create_schema(settings: Settings | None = None) -> LodgeSchema:
    settings = settings or Settings()
    return LodgeSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            ErrorPolicy,
            partial(QueryDepthLimiter, max_depth=settings.max_query_depth),
            partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
            partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
            OperationScopeExtension,
        ],
    )
