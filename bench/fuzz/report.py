"""The fuzzer's report: the counts kept while it runs, the server's tracebacks matched to the problems by request
id, the summary, and problems.json."""

from __future__ import annotations

import collections
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import machine
from bench.fuzz.oracle import Case, Problem


@dataclass
class Stats:
    sent: int = 0
    by_outcome: collections.Counter[str] = field(default_factory=collections.Counter)
    by_code: collections.Counter[str] = field(default_factory=collections.Counter)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    by_persona: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    field_outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    field_messages: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    persona_outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    hoisted: int = 0
    failed_mutations_checked: int = 0
    reseeds: int = 0
    reprovisions: int = 0
    seed_failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) (\S+) ", re.M)


def server_records(log_path: Path) -> list[tuple[str, str, str, str]]:
    """(level, logger, message, traceback) for every record of the server's log, JSON lines or text."""
    out: list[tuple[str, str, str, str]] = []
    text = log_path.read_text(errors="replace")
    plain: list[str] = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                out.append(
                    (
                        str(entry.get("level", "")).upper(),
                        str(entry.get("logger", "")),
                        str(entry.get("message", "")),
                        str(entry.get("exception", "")),
                    )
                )
                continue
        plain.append(line)
    rest = "\n".join(plain)
    starts = [m.start() for m in LOG_RECORD.finditer(rest)]
    for i, start in enumerate(starts):
        chunk = rest[start : starts[i + 1] if i + 1 < len(starts) else len(rest)].rstrip()
        m = LOG_RECORD.match(chunk)
        assert m is not None
        first, _, tb = chunk.partition("\n")
        out.append((m.group(1), m.group(2), first[m.end() :], tb))
    return out


def exception_of(tb: str) -> str:
    """`Type: message` of the last exception in a traceback, with ids and numbers blurred."""
    named = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Warning|Exit|Interrupt|Cancelled)\b")
    lines = [line for line in tb.strip().splitlines() if named.match(line)]
    last = lines[-1] if lines else (tb.strip().splitlines() or ["?"])[-1]
    last = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", last)
    last = re.sub(r"\(Background on this error at: [^)]*\)", "", last)
    last = re.sub(r"\d+", "<n>", last)
    return last.strip()[:160]


def app_frame(tb: str) -> str:
    """The deepest frame in app/: where the fix goes."""
    frames = re.findall(r'File "[^"]*/app/([^"]+)", line (\d+), in (\S+)', tb)
    if not frames:
        return "(no app frame)"
    path, line, func = frames[-1]
    return f"app/{path}:{line} ({func})"


def attach_tracebacks(problems: list[Problem], log_path: Path) -> tuple[list[Problem], list[str]]:
    """One INTERNAL problem per traceback the server logged for the request (a request may log several);
    the server's other ERROR records are returned apart."""
    by_request: dict[str, list[str]] = collections.defaultdict(list)
    unattributed = []
    for level, _, message, tb in server_records(log_path):
        m = re.search(r"\(request ([A-Za-z0-9._-]+)\)", message)
        if m and tb:
            by_request[m.group(1)].append(f"{message}\n{tb}")
        elif level in ("ERROR", "CRITICAL"):
            unattributed.append(f"{message}\n{tb}".strip())
    out: list[Problem] = []
    done: set[str] = set()
    for problem in problems:
        tbs = by_request.get(problem.request_id, [])
        if problem.kind != "INTERNAL" or not tbs:
            if tbs:
                problem.traceback = tbs[0]
            out.append(problem)
            continue
        if problem.request_id in done:
            continue
        done.add(problem.request_id)
        paths = [p.detail for p in problems if p.request_id == problem.request_id and p.kind == "INTERNAL"]
        for tb in dict.fromkeys(tbs):
            out.append(
                Problem(
                    kind="INTERNAL",
                    signature=exception_of(tb),
                    case=problem.case,
                    request_id=problem.request_id,
                    detail=f"{app_frame(tb)}; errors: " + " ".join(paths)[:600],
                    traceback=tb,
                )
            )
    return out, unattributed


def size(case: Case) -> int:
    return len(case.document) + len(json.dumps(case.variables))


def summarize(
    stats: Stats,
    mutation_names: list[str],
    problems: list[Problem],
    unattributed: list[str],
    healthy: str,
    seed: int,
    examples: int,
) -> str:
    lines = [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
        f"examples asked: {examples}, seed {seed}; documents sent: {stats.sent} in {stats.elapsed:.0f} s "
        f"({stats.sent / max(stats.elapsed, 1e-9):.1f}/s); variables used in {stats.hoisted}",
        "by kind: " + ", ".join(f"{k} {v}" for k, v in stats.by_kind.most_common()),
        "by persona: "
        + "; ".join(
            f"{k} {v} ({', '.join(f'{o} {n}' for o, n in stats.persona_outcomes[k].most_common(4))})"
            for k, v in stats.by_persona.most_common()
        ),
        "HTTP status: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_status.items())),
        "outcome (first error's code): " + ", ".join(f"{k} {v}" for k, v in stats.by_outcome.most_common()),
        "all error codes: " + ", ".join(f"{k} {v}" for k, v in stats.by_code.most_common()),
        f"failed mutations checked for partial writes: {stats.failed_mutations_checked}; reseeds: {stats.reseeds}, "
        f"personas replaced: {stats.reprovisions}; "
        f"seed failures: {len(stats.seed_failures)}",
        f"health at the end: {healthy}",
    ]
    reached = sorted(f for f in mutation_names if stats.field_outcomes[f]["data"])
    never = sorted(f for f in mutation_names if not stats.field_outcomes[f]["data"])
    lines.append(f"mutations that returned data at least once: {len(reached)}/{len(mutation_names)}")
    if never:
        lines.append(
            "never returned data: "
            + "; ".join(
                f"{f} ({', '.join(f'{k} {v}' for k, v in stats.field_outcomes[f].most_common(3))}: "
                + " / ".join(m for m, _ in stats.field_messages[f].most_common(2))
                + ")"
                for f in never
            )
        )
    groups: dict[str, list[Problem]] = collections.defaultdict(list)
    for problem in problems:
        groups[f"{problem.kind}: {problem.signature}"].append(problem)
    lines.append(f"problems: {len(problems)} in {len(groups)} distinct signatures")
    for name, found in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        smallest = min(found, key=lambda p: size(p.case))
        fields = collections.Counter(f for p in found for f in p.case.root_fields)
        lines.append(f"- {name} x{len(found)} (fields: {', '.join(f'{k} {v}' for k, v in fields.most_common(6))})")
        if found[0].kind == "INTERNAL":
            frames = collections.Counter(p.detail.split(";")[0] for p in found)
            lines.append("    where: " + ", ".join(f"{k} x{v}" for k, v in frames.most_common(8)))
        lines.append(f"    persona {smallest.case.persona}, request {smallest.request_id}")
        lines.append("    document: " + smallest.case.document.replace("\n", " ")[:1500])
        lines.append("    variables: " + json.dumps(smallest.case.variables)[:800])
        lines.append("    detail: " + smallest.detail[:800])
        if smallest.traceback:
            tail = smallest.traceback.strip().splitlines()
            lines.append("    traceback (tail): " + " | ".join(t.strip() for t in tail[-8:]))
    if unattributed:
        lines.append(f"server ERROR records without a request id: {len(unattributed)}")
        for text in collections.Counter(exception_of(u) or u[:160] for u in unattributed).most_common(10):
            lines.append(f"  {text[1]} x {text[0]}")
    if stats.seed_failures:
        lines.append("seed failures (first 10): " + " || ".join(stats.seed_failures[:10]))
    return "\n".join(lines)


def iter_problem_json(problems: list[Problem]) -> Iterator[dict[str, Any]]:
    for p in problems:
        yield {
            "kind": p.kind,
            "signature": p.signature,
            "request_id": p.request_id,
            "persona": p.case.persona,
            "fields": p.case.root_fields,
            "document": p.case.document,
            "variables": p.case.variables,
            "detail": p.detail,
            "traceback": p.traceback,
        }
