"""The fuzzing loop: which documents are drawn (`plan`: 75% single-field mutations, every mutation field the
same number of times, 15% queries, 5% multi-field mutations, 5% schema violations), as whom, and one hypothesis
run per (kind, target), each document sent and checked before the next is drawn."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
import zlib

import httpx
import hypothesis_graphql
from graphql import DocumentNode, FieldNode, GraphQLSchema, OperationDefinitionNode
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench.fuzz import oracle
from bench.fuzz.database import Database
from bench.fuzz.oracle import REQUEST_TIMEOUT, Case, Problem
from bench.fuzz.report import Stats
from bench.fuzz.seed import Seeder
from bench.fuzz.strategies import Pools, rewrite, scalar_strategies

# Mutations that need `Authorization: ApiKey`: mostly fuzzed with a key.
API_KEY_FIELDS = frozenset({"ingestLog", "ingestLogs", "recordRequest", "startFlow", "completeFlow"})


class Fuzzer:
    """Draws a document (hypothesis, then `rewrite`), sends it as one of the personas and checks the answer
    (bench/fuzz/oracle.py); remakes the personas and rows the fuzzing destroyed."""

    def __init__(self, base: str, client: httpx.AsyncClient, db: Database, schema: GraphQLSchema) -> None:
        self.base = base
        self.client = client
        self.db = db
        self.schema = schema
        self.pools = Pools()
        self.stats = Stats()
        self.problems: list[Problem] = []
        self.seeder = Seeder(client, db, self.pools, self.stats)
        self.last_snapshot: dict[str, tuple[int, int]] | None = None
        self.counter = 0
        assert schema.mutation_type is not None and schema.query_type is not None
        self.mutation_names = sorted(schema.mutation_type.fields)
        custom = scalar_strategies(self.pools)

        def identity(doc: DocumentNode) -> DocumentNode:
            return doc

        self.per_mutation = {
            name: hypothesis_graphql.mutations(schema, fields=[name], custom_scalars=custom, print_ast=identity)
            for name in self.mutation_names
        }
        self.any_mutations = hypothesis_graphql.mutations(schema, custom_scalars=custom, print_ast=identity)
        self.queries = hypothesis_graphql.queries(schema, custom_scalars=custom, print_ast=identity)
        self.negative = hypothesis_graphql.from_schema(
            schema, custom_scalars=custom, print_ast=identity, mode=hypothesis_graphql.Mode.NEGATIVE
        )

    def strategy(self, kind: str, target: str) -> st.SearchStrategy[DocumentNode]:
        if kind == "query":
            return self.queries
        if kind == "multi":
            return self.any_mutations
        if kind == "negative":
            return self.negative
        return self.per_mutation[target]

    def draw(self, data: st.DataObject, kind: str, target: str) -> Case:
        # Every choice comes from `data` (never from the fuzzer's state): hypothesis replays choice sequences
        # and refuses a test whose draws depend on anything else.
        index = self.counter
        self.counter += 1
        document = data.draw(self.strategy(kind, target))
        op = document.definitions[0]
        assert isinstance(op, OperationDefinitionNode)
        root_fields = [sel.name.value for sel in op.selection_set.selections if isinstance(sel, FieldNode)]
        roll = data.draw(st.integers(min_value=0, max_value=99))
        if API_KEY_FIELDS & set(root_fields):
            persona = (
                "environment-key"
                if roll < 45
                else "project-key"
                if roll < 70
                else "admin"
                if roll < 85
                else "anonymous"
            )
        else:
            persona = (
                "admin"
                if roll < 70
                else "user"
                if roll < 85
                else "anonymous"
                if roll < 93
                else "junk-token"
                if roll < 95
                else "project-key"
                if roll < 98
                else "environment-key"
            )
        rng = random.Random(data.draw(st.integers(min_value=0, max_value=2**64)))
        hoisted = rng.random() < 0.5
        text, variables = rewrite(document, self.schema, rng, self.pools, hoisted)
        return Case(
            index=index,
            kind=kind,
            persona=persona,
            document=text,
            variables=variables,
            hoisted=hoisted,
            operation=op.operation.value,
            root_fields=root_fields,
        )

    def auth_header(self, persona: str) -> dict[str, str]:
        if persona in ("admin", "user"):
            return {"authorization": self.seeder.bearer(persona)}
        if persona in self.seeder.keys:
            return {"authorization": f"ApiKey {self.seeder.keys[persona]}"}
        if persona == "junk-token":
            return {"authorization": "Bearer not-a-token"}
        return {}

    async def execute(self, case: Case) -> None:
        request_id = f"fuzz-{case.index}-{uuid.uuid4().hex[:8]}"
        headers = {"x-request-id": request_id, **self.auth_header(case.persona)}
        mutation = case.operation == "mutation"
        before = None
        if mutation:
            before = self.last_snapshot or await self.db.snapshot()
        self.last_snapshot = None
        stats = self.stats
        stats.sent += 1
        stats.by_kind[case.kind] += 1
        stats.by_persona[case.persona] += 1
        stats.hoisted += case.hoisted
        try:
            response = await self.client.post(
                "/graphql",
                json={"query": case.document, "variables": case.variables},
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            stats.by_outcome["timeout" if isinstance(exc, httpx.TimeoutException) else "transport error"] += 1
            self.problems.append(oracle.unanswered(case, request_id, exc))
            return
        stats.by_status[response.status_code] += 1
        self.problems += oracle.server_error(case, request_id, response)
        try:
            body = response.json()
        except ValueError:
            stats.by_outcome[f"HTTP {response.status_code} (not JSON)"] += 1
            self.problems += oracle.not_json(case, request_id, response)
            return
        errors = body.get("errors") or [] if isinstance(body, dict) else []
        data = body.get("data") if isinstance(body, dict) else None
        codes = oracle.error_codes(errors)
        outcome = "data" if not errors else codes[0]
        stats.by_outcome[outcome] += 1
        stats.persona_outcomes[case.persona][outcome] += 1
        stats.by_code.update(codes)
        for target in case.root_fields if case.kind in ("mutation", "query") else []:
            stats.field_outcomes[target][outcome] += 1
            if errors and isinstance(errors[0], dict):
                message = re.sub(r"\d+", "<n>", str(errors[0].get("message")))[:90]
                stats.field_messages[target][message] += 1
        self.problems += oracle.bad_errors(case, request_id, errors, codes)
        if data:
            self.pools.harvest(data)
        if mutation and errors:
            stats.failed_mutations_checked += 1
            assert before is not None
            after = await self.db.snapshot()
            audited = await self.db.audit_rows(request_id)
            found = oracle.failed_mutation(case, request_id, body, errors, data, before, after, audited)
            if not any(p.kind == "partial write" for p in found):
                self.last_snapshot = after  # unchanged: the next mutation's "before"
            self.problems += found
        try:
            await self.recover(case, codes)
        except Exception as exc:  # the harness's own trouble: note it, the next example tries again
            self.stats.seed_failures.append(f"recover after {request_id}: {type(exc).__name__}: {exc}"[:300])
            self.last_snapshot = None

    async def recover(self, case: Case, codes: list[str]) -> None:
        """The fuzzer may delete its own users or revoke its keys: make fresh ones."""
        if self.counter % 100 == 0:
            await self.db.refresh(self.pools)
        if "UNAUTHENTICATED" not in codes and self.counter % 500:
            return
        if self.counter % 500 == 0:
            await self.seeder.seed()
            self.last_snapshot = None
            return
        if case.persona in ("admin", "user") and not await self.seeder.persona_ok(case.persona):
            await self.seeder.provision(case.persona)
            self.stats.reprovisions += 1
        elif case.persona in ("project-key", "environment-key"):
            probe = await self.client.post(
                "/graphql",
                json={"query": "{ requestLogs(first: 1) { totalCount } }"},
                headers=self.auth_header(case.persona),
            )
            if any(
                (e.get("extensions") or {}).get("code") == "UNAUTHENTICATED" for e in probe.json().get("errors") or []
            ):
                await self.seeder.seed()
        self.last_snapshot = None


def plan(fuzzer: Fuzzer, examples: int) -> list[tuple[str, str, int]]:
    """(kind, target, examples): 75% single-field mutations, the same number for every mutation field; 15%
    queries, 5% documents of several mutation fields, 5% documents with one schema violation (hypothesis-graphql's
    negative mode), interleaved."""
    names = fuzzer.mutation_names
    others = {"query": examples * 15 // 100, "multi": examples * 5 // 100, "negative": examples * 5 // 100}
    single = examples - sum(others.values())
    per, extra = divmod(single, len(names))
    runs = [("mutation", name, per + (i < extra)) for i, name in enumerate(names)]
    chunks = 8
    spread: list[tuple[str, str, int]] = []
    for kind, total in others.items():
        spread.extend((kind, "", total // chunks + (i < total % chunks)) for i in range(chunks))
    out: list[tuple[str, str, int]] = []
    step = max(1, len(runs) // chunks)
    for i in range(chunks):
        out.extend(runs[i * step : (i + 1) * step if i < chunks - 1 else len(runs)])
        out.extend(spread[i::chunks])
    return [run for run in out if run[2] > 0]


def run_examples(fuzzer: Fuzzer, loop: asyncio.AbstractEventLoop, examples: int, seed: int, progress: int) -> None:
    """One hypothesis run per planned (kind, target), each seeded from `seed` and its name; then top-ups until
    `examples` documents have been sent (hypothesis may drop a draw that grows too large)."""
    started = time.perf_counter()
    last = 0

    def report() -> None:
        nonlocal last
        if progress and fuzzer.stats.sent // progress > last // progress:
            elapsed = time.perf_counter() - started
            print(
                f"[{elapsed:6.0f}s] sent {fuzzer.stats.sent}, problems {len(fuzzer.problems)}, "
                + ", ".join(f"{k} {v}" for k, v in fuzzer.stats.by_outcome.most_common(7)),
                flush=True,
            )
        last = fuzzer.stats.sent

    def run(kind: str, target: str, count: int, round_: int) -> None:
        @hypothesis_seed(zlib.crc32(f"{seed}:{kind}:{target}:{round_}".encode()))
        @settings(
            max_examples=count,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            if fuzzer.stats.sent >= examples:
                return
            case = fuzzer.draw(data, kind, target)  # every draw before the request: hypothesis may drop a draw
            loop.run_until_complete(fuzzer.execute(case))
            report()

        try:
            fuzz()
        except Exception as exc:  # a harness failure, not a server one: note it and go on
            fuzzer.stats.seed_failures.append(f"hypothesis run {kind} {target}: {type(exc).__name__}: {exc}"[:300])

    round_ = 0
    while fuzzer.stats.sent < examples and round_ < 5:
        for kind, target, count in plan(fuzzer, examples - fuzzer.stats.sent):
            run(kind, target, count, round_)
        round_ += 1
    fuzzer.stats.elapsed = time.perf_counter() - started
