"""A validation rule for ingestion mutations."""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, ValidationRule

INGEST_FIELDS = frozenset({"ingestLog", "ingestLogs"})


class IngestStandsAlone(ValidationRule):
    """Ingestion commits on its own (see `app.logs.resolvers.ingest`), outside the operation's
    transaction, so it may not share a mutation with fields that could roll back."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        if node.operation != OperationType.MUTATION:
            return
        fields = [sel for sel in node.selection_set.selections if isinstance(sel, FieldNode)]
        if len(node.selection_set.selections) > 1 and any(f.name.value in INGEST_FIELDS for f in fields):
            self.report_error(GraphQLError("ingestLog and ingestLogs must be the only field of their mutation", node))
