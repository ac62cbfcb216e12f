"""The one schema: every domain's Query, Mutation and Subscription merged at the root."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from app.accounts.resolvers import AccountsMutation, AccountsQuery
from app.api.cost import CostLimit
from app.api.errors import shape_errors
from app.api.extensions import OperationScopeExtension, RefuseNulCharacters
from app.api.lengths import InputLengthLimit, InputLengths
from app.api.persisted import PersistedOperations, Registry
from app.api.ratelimit import RateLimitOperations
from app.api.scalars import JSON, DateTime, JSONScalar
from app.api.sharing import SharingExecutor
from app.api.transport import SubscriptionsNeedAWebsocket
from app.audit.recorder import require_audited
from app.audit.resolvers import AuditMutation, AuditQuery
from app.communities.resolvers import CommunitiesMutation, CommunitiesQuery, CommunitiesSubscription
from app.gateway.resolvers import GatewayMutation, GatewayQuery
from app.logs.resolvers import LogsMutation, LogsQuery, LogsSubscription
from app.logs.rules import IngestStandsAlone
from app.observability.graphql import ObservabilityExtension
from app.observability.tracing import TracingExtension
from app.settings import Settings
from app.vendors.resolvers import VendorsMutation, VendorsQuery, VendorsSubscription
from app.workflows.resolvers import WorkflowsMutation, WorkflowsQuery, WorkflowsSubscription

QUERIES = (AccountsQuery, AuditQuery, LogsQuery, GatewayQuery, CommunitiesQuery, WorkflowsQuery, VendorsQuery)
MUTATIONS = (
    AccountsMutation,
    AuditMutation,
    LogsMutation,
    GatewayMutation,
    CommunitiesMutation,
    WorkflowsMutation,
    VendorsMutation,
)
SUBSCRIPTIONS = (LogsSubscription, CommunitiesSubscription, WorkflowsSubscription, VendorsSubscription)
Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
Subscription = merge_types("Subscription", SUBSCRIPTIONS)
require_audited(Mutation)


class LodgeSchema(strawberry.Schema):
    # What the lean HTTP pipeline (app/api/pipeline.py) validates and looks up with, as the
    # extensions below do: set by create_schema.
    limit_rules: list[Any]
    registry: Registry

    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        # Logs what deserves it (unexpected errors, with their request id): client mistakes are
        # not server errors.
        shape_errors(errors, execution_context)


def create_schema(settings: Settings | None = None) -> LodgeSchema:
    settings = settings or Settings()
    # The limiters build their validation rule classes when constructed. Build them once, so that
    # every request validates with the same rules and ValidationCache can hit.
    registry = Registry.from_directory(settings.persisted_operations_dir)
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        IngestStandsAlone,
    ]
    tracing = [TracingExtension] if settings.otel_enabled else []
    schema = LodgeSchema(
        execution_context_class=SharingExecutor,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map={datetime: DateTime, JSON: JSONScalar}),
        extensions=[
            ObservabilityExtension,
            *tracing,
            # Clients send the same few documents again and again: parse and validate each once.
            partial(ParserCache, maxsize=1024),
            partial(ValidationCache, maxsize=1024),
            partial(PersistedOperations, registry=registry, only=settings.persisted_only, apq=settings.apq),
            SubscriptionsNeedAWebsocket,
            partial(AddValidationRules, limit_rules),
            partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
            RefuseNulCharacters,
            partial(InputLengthLimit, lengths=InputLengths(settings)),
            RateLimitOperations,
            partial(CostLimit, max_cost=settings.max_query_cost),
            OperationScopeExtension,
        ],
    )
    schema.limit_rules = limit_rules
    schema.registry = registry
    return schema
