"""A validation rule for the mutations that commit on their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
)

# Fields that commit on their own, in one statement, to hold hot locks as briefly as possible.
SELF_COMMITTING = frozenset({"ingestLog", "ingestLogs"})


class IngestStandsAlone(ValidationRule):
    """Ingestion commits on its own (see `app.logs.resolvers.ingest`), outside the operation's
    transaction, so it may not share a mutation with fields that could roll back."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        if node.operation != OperationType.MUTATION:
            return
        # The root fields as execution collects them, through inline fragments and spreads, by
        # response key. @skip/@include are not read: validation knows no variables, so a field
        # that may run counts.
        fields = {(f.alias or f.name).value: f.name.value for f in self._root_fields(node.selection_set, set())}
        alone = sorted(set(fields.values()) & SELF_COMMITTING)
        if len(fields) > 1 and alone:
            self.report_error(GraphQLError(f"{', '.join(alone)} must be the only field of its mutation", node))

    def _root_fields(self, selection_set: SelectionSetNode, spread: set[str]) -> Iterator[FieldNode]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from self._root_fields(selection.selection_set, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                # Each fragment once: a cycle (reported by NoFragmentCyclesRule) is not followed.
                if fragment is not None and name not in spread:
                    spread.add(name)
                    yield from self._root_fields(fragment.selection_set, spread)
