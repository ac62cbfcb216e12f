"""Compiled reads (issue 16): a query's root field as one SQL statement that writes its JSON.

`declare` holds what types and root fields read (placed next to the strawberry types), `planner`
turns a selection into a statement, `runtime` runs it inside graphql-core's execution. The
design, and what does not compile yet: docs/compiled-reads.md.
"""
