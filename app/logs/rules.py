"""A validation rule for the mutations that commit on their own."""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, ValidationRule

# Fields that commit on their own, in one statement, to hold hot locks as briefly as possible.
SELF_COMMITTING = frozenset({"ingestLog", "ingestLogs"})


class IngestStandsAlone(ValidationRule):
    """Ingestion commits on its own (see `app.logs.resolvers.ingest`), outside the operation's
    transaction, so it may not share a mutation with fields that could roll back."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        if node.operation != OperationType.MUTATION:
            return
        fields = [sel for sel in node.selection_set.selections if isinstance(sel, FieldNode)]
        alone = sorted({f.name.value for f in fields} & SELF_COMMITTING)
        if len(node.selection_set.selections) > 1 and alone:
            self.report_error(GraphQLError(f"{', '.join(alone)} must be the only field of its mutation", node))
