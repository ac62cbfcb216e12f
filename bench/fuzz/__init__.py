"""Schema-driven fuzzing of the GraphQL API: random documents and variables from hypothesis-graphql.

Run by hand: `uv run python -m bench.fuzz [--examples 10000] [--seed N] [--rev HEAD|worktree]`. CI runs 300 documents
with seed 1 (tests/test_fuzz_smoke.py).

What it does. Exports `--rev` (default HEAD, with `git archive`: the checkout may be mid-edit) and runs it as
`lodge serve` (LODGE_ENV=production, Redis bus at `--redis`, JSON logs) on a throwaway database on the PostgreSQL
at BENCH_DATABASE_URL, dropped at the end. It seeds real rows through the API (an admin holding a role with `*`, a
plain user, a victim user; a project with a project-wide key and an environment key, client, service, environment
with quota, a flow, logs, a guild with members, an analysis, a conversation and message, workflows with nodes, an
edge, a published version, an execution and its log, files, vendors with a location, billing subscriptions, an
integration, a role, a session) and reseeds every 500 documents or when the fuzzing killed its own credentials.
Then it sends `--examples` documents over HTTP, one at a time: 75% single-field mutations (every mutation field of
the introspected schema the same number of times), 15% queries, 5% documents of several mutation fields, 5%
documents with one schema violation (hypothesis-graphql's negative mode). `ID`, `String`, `DateTime` and `JSON`
have custom strategies (real ids of any type, random uuids, junk; real strings and cursors; valid ISO dates and
junk; small JSON values); a second pass swaps half the values by argument name for plausible ones (an id of the
right type, an existing service, email, node key or cursor, a mutated cursor, an in-range coordinate or page size)
and hoists every argument into variables in half the documents (a tenth of those with one variable of the wrong
shape). Callers: the admin 70%, the plain user 15%, anonymous or a junk token 10%, an API key 5% (70% for the
API-key mutations). Checks per document: no HTTP 5xx, no non-JSON body, no error without `extensions.code`, no
`INTERNAL` (with the server's traceback, found by request id), no hang (60 s); for every mutation answered with
errors: per-table row counts and `sum(hashtext(row::text))` equal before and after except `audit_logs` (and what
the README says is written anyway: logs and api_keys for ingestion, refresh_tokens for a reused refresh token,
request_logs for a gateway's refused request),
`data` null, and every audit row of the request `success = false` (and one at least if a field ran). At the end
`/healthz` and `/readyz`. The sweepers are slowed to once a day so that their writes are not taken for partial
writes. Output: a summary (also in bench/.results/fuzz-<time>/summary.txt) and, next to it, problems.json and
the server's log.

Results of the long runs, with their dates and machines: docs/fuzz.md.

The modules: strategies.py (what is generated: scalar strategies, the pools of real values, the rewriting pass),
seed.py (the personas and real rows), fuzzer.py (the plan and the loop: draw, send, check, recover), oracle.py (what
counts as a problem), database.py (checksums, audit rows and pools read from the database), report.py (counts,
tracebacks, the summary, problems.json), __main__.py (the command line and one run); the server is started by
bench/launch.py.
"""
