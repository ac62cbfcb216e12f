"""The drills' Markdown report: the setup, request tables by phase, checks, live-tail comparisons and
Lodge's WARNING and ERROR lines grouped."""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.common import percentile
from bench.drills.cluster import Cluster, Redis
from bench.drills.load import Ingest, Result, Tail


def environment(c: Cluster) -> list[str]:
    uname = platform.uname()
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores (nproc), Linux {uname.release}, Python {platform.python_version()}",
        f"- {c.pg.version()}; {Redis.version().split(' sha=')[0]}",
        "- load average (1/5/15 min) at the start: {:.2f} {:.2f} {:.2f} (the machine is shared)".format(
            *os.getloadavg()
        ),
        f"- Lodge: {c.source}; one `lodge serve` process, LODGE_ENV=production, default pool (20), Redis broker",
    ]


def ms(seconds: Sequence[float], p: float) -> str:
    return f"{1000 * percentile(list(seconds), p):.0f}" if seconds else "-"


def table(results: list[Result], phases: list[tuple[str, float, float]]) -> list[str]:
    lines = [
        "| phase | path | requests | ok | errors (HTTP status, code: count) | hung | dropped | p50 ms | p99 ms | max ms |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, start, end in phases:
        for path in sorted({r.path for r in results}):
            chosen = [r for r in results if r.path == path and start <= r.sent < end]
            if not chosen:
                continue
            codes = Counter(f"{r.status} {r.code}" for r in chosen if r.outcome == "error")
            latency = [r.latency for r in chosen]
            errors = ", ".join(f"{k}: {v}" for k, v in codes.most_common()) or "-"
            lines.append(
                f"| {phase} | {path} | {len(chosen)} | {sum(r.outcome == 'ok' for r in chosen)} | {errors} "
                f"| {sum(r.outcome == 'hang' for r in chosen)} "
                f"| {sum(r.outcome in ('dropped', 'unreachable') for r in chosen)} "
                f"| {ms(latency, 50)} | {ms(latency, 99)} | {ms([max(latency)], 50)} |"
            )
    return lines


def log_entries(lines: list[str]) -> list[str]:
    """Lodge's WARNING and ERROR records as one line each: level, logger, message and, for a
    traceback, its last line (the exception). Reads JSON lines and the plain text format."""
    out: list[str] = []
    for line in lines:
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            level = str(record.get("level", "")).upper()
            if level not in ("WARNING", "ERROR", "CRITICAL"):
                continue
            message = str(record.get("message", "")).strip().splitlines() or [""]
            trace = str(record.get("exc_info") or record.get("exception") or "").strip().splitlines() or message[1:]
            extra = {k: v for k, v in record.items() if k in ("request_id", "requestId")}
            # The exception that ended the traceback (SQLAlchemy adds a "Background on this error" line after it).
            last = [line for line in trace if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line)][-1:]
            out.append(" ".join([level, str(record.get("logger", "")), message[0], *last, *map(str, extra.values())]))
        elif re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) or re.match(r"^[A-Za-z_][\w.]*(Error|Exception):", line):
            out.append(re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", line))
    return out


def log_summary(lines: list[str], limit: int = 12) -> list[str]:
    """`log_entries`, grouped with ids and numbers masked: count x first example."""
    masked: Counter[str] = Counter()
    example: dict[str, str] = {}
    for entry in log_entries(lines):
        text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", "<id>", entry)
        text = re.sub(r"\d+(\.\d+)?", "N", text)[:160]
        masked[text] += 1
        example.setdefault(text, entry[:400])
    return [f"{count:5d} x {example[text]}" for text, count in masked.most_common(limit)] or ["(none)"]


def compare_tail(tail: Tail, expected: list[str]) -> tuple[bool, str]:
    got = [i for i, _, _ in tail.received]
    got_set, expected_set = set(got), set(expected)
    missing = len(expected_set - got_set)
    duplicates = len(got) - len(got_set)
    unexpected = len(got_set - expected_set)
    # In order: the logs received that are in the database come in the database's seq order.
    rank = {id_: n for n, id_ in enumerate(expected)}
    ranks = [rank[i] for i in got if i in rank]
    in_order = all(a < b for a, b in itertools.pairwise(ranks))
    ok = got == expected
    return ok, (
        f"{tail.name}: received {len(got)} of {len(expected)} in the database; missing {missing}, "
        f"duplicated {duplicates}, not in the database {unexpected}, in seq order: {in_order}; "
        f"websocket connections {tail.connects}"
    )


@dataclass
class Report:
    title: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def check(self, ok: bool, what: str) -> None:
        self.lines.append(f"- [{'x' if ok else ' '}] {what}")
        if not ok:
            self.failures.append(what)

    def print(self) -> int:
        self.lines.append("- load average (1/5/15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"\n## {self.title}\n", *self.lines, sep="\n")
        verdict = "all checks passed" if not self.failures else f"{len(self.failures)} check(s) FAILED"
        print(f"\n**{verdict}**")
        return 1 if self.failures else 0


def check_acknowledged(report: Report, ingest: Ingest, stored: list[tuple[str, int, str | None]]) -> None:
    by_id = {id_ for id_, _, _ in stored}
    by_key = {key for _, _, key in stored if key is not None}
    lost = [key for key, id_ in ingest.acked.items() if id_ not in by_id]
    stored_anyway = {key: result for key, result in ingest.unacked.items() if key in by_key}
    report.add(
        f"- logs acknowledged: {len(ingest.acked)}; in the database afterwards: {len(ingest.acked) - len(lost)}; "
        f"logs of failed requests: {len(ingest.unacked)}, of which stored anyway: {len(stored_anyway)}"
    )
    requests = {id(r): r for r in stored_anyway.values()}.values()
    for r in requests:
        report.add(
            f"  - stored although the request failed: {r.path} at t={r.sent:.1f}s, {r.outcome} HTTP {r.status} "
            f"{r.code} {r.note[:70]!r} request {r.request_id}"
        )
    report.check(not lost, f"no acknowledged log missing from the database (missing: {len(lost)} {lost[:5]})")


def seconds_after(t: float | None, since: float) -> str:
    return "never" if t is None else f"{t - since:.1f} s"


def examples(results: list[Result]) -> str:
    kinds = Counter(f"{r.path} HTTP {r.status} {r.code} {r.note[:60]!r}" for r in results)
    sample = ", ".join(f"{k} x{v}" for k, v in kinds.most_common(3))
    ids = [r.request_id for r in results[:3]]
    return f"{sample}; request ids {ids}" if results else "-"
