"""What counts as a problem: for every document, no HTTP 5xx, no body that is not JSON, no error without
`extensions.code`, no INTERNAL, no hang; for a mutation answered with errors, no table changed but the ones the
README says are written anyway, `data` null, and audit rows that say the operation failed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

REQUEST_TIMEOUT = 60.0  # no answer within this is a hang
# Tables a failed mutation may change, by design (README): every failed mutation records its audit row;
# ingestion commits on its own (logs, and the key's lastUsedAt on the same autocommit connection); a reused
# refresh token revokes its whole login; a gateway's refused request is logged (a request_logs row, refused).
ALWAYS_WRITTEN = frozenset({"audit_logs"})
WRITTEN_ON_FAILURE = {
    "ingestLog": frozenset({"logs", "api_keys"}),
    "ingestLogs": frozenset({"logs", "api_keys"}),
    "refresh": frozenset({"refresh_tokens"}),
    "recordRequest": frozenset({"request_logs"}),
    "startFlow": frozenset({"request_logs"}),
}


@dataclass
class Case:
    index: int
    kind: str  # mutation (one field), multi (several mutation fields), negative (schema violation), query
    persona: str  # admin, user, anonymous, junk-token, project-key, environment-key
    document: str
    variables: dict[str, Any]
    hoisted: bool
    operation: str
    root_fields: list[str]


@dataclass
class Problem:
    kind: str  # INTERNAL, HTTP 5xx, partial write, audit, hang, ...
    signature: str
    case: Case
    request_id: str
    detail: str
    traceback: str = ""


def unanswered(case: Case, request_id: str, exc: httpx.HTTPError) -> Problem:
    """A request that got no answer: a hang (timed out) or a transport failure."""
    if isinstance(exc, httpx.TimeoutException):
        return Problem(
            "hang", "hang: " + ",".join(case.root_fields), case, request_id, f"no answer in {REQUEST_TIMEOUT:.0f} s"
        )
    return Problem("transport", f"transport: {type(exc).__name__}", case, request_id, repr(exc))


def server_error(case: Case, request_id: str, response: httpx.Response) -> list[Problem]:
    if response.status_code < 500:
        return []
    signature = f"HTTP {response.status_code}: " + ",".join(case.root_fields)
    return [Problem("HTTP 5xx", signature, case, request_id, response.text[:2000])]


def not_json(case: Case, request_id: str, response: httpx.Response) -> list[Problem]:
    """A body that does not parse (a 5xx has been counted already)."""
    if response.status_code >= 500:
        return []
    signature = f"not JSON: HTTP {response.status_code}"
    return [Problem("not JSON", signature, case, request_id, response.text[:2000])]


def error_codes(errors: list[Any]) -> list[str]:
    return [str(((e or {}).get("extensions") or {}).get("code") or "NO CODE") for e in errors]


def bad_errors(case: Case, request_id: str, errors: list[Any], codes: list[str]) -> list[Problem]:
    """An INTERNAL error (under the request id the server logged it with) or an error without a code."""
    found = []
    for error, code in zip(errors, codes, strict=True):
        if code == "INTERNAL":
            rid = str((error.get("extensions") or {}).get("requestId") or request_id)
            path = ".".join(str(p) for p in error.get("path") or []) or "(no path)"
            found.append(Problem("INTERNAL", f"INTERNAL at {path}", case, rid, path))
        elif code == "NO CODE":
            found.append(
                Problem("no code", "error without extensions.code", case, request_id, json.dumps(error)[:1000])
            )
    return found


def failed_mutation(
    case: Case,
    request_id: str,
    body: Any,
    errors: list[Any],
    data: Any,
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
    audited: list[tuple[str, bool]],
) -> list[Problem]:
    """A mutation answered with `errors`: tables changed other than the exempt ones (`before` and `after` are
    per-table row counts and checksums), no audit row although a field ran, an audit row that says success, data."""
    found = []
    exempt = set(ALWAYS_WRITTEN)
    for name in case.root_fields:
        exempt |= WRITTEN_ON_FAILURE.get(name, frozenset())
    changed = [
        f"{t}: rows {before.get(t, (0, 0))[0]} -> {after.get(t, (0, 0))[0]}"
        + ("" if before.get(t, (0, 0))[0] != after.get(t, (0, 0))[0] else " (same count, contents changed)")
        for t in sorted(set(before) | set(after))
        if t not in exempt and before.get(t) != after.get(t)
    ]
    if changed:
        tables = sorted(c.split(":")[0] for c in changed)
        found.append(
            Problem(
                "partial write",
                f"partial write in {','.join(tables)} by {','.join(sorted(set(case.root_fields)))}",
                case,
                request_id,
                "; ".join(changed) + f"; errors: {json.dumps(errors)[:800]}",
            )
        )
    executed = any(e.get("path") for e in errors if isinstance(e, dict))
    if executed and not audited:
        # A field ran (its error has a path), so its audit row must have been recorded as a failure.
        found.append(
            Problem(
                "audit", "failed mutation left no audit row", case, request_id, f"errors: {json.dumps(errors)[:800]}"
            )
        )
    if any(success for _, success in audited):
        found.append(
            Problem(
                "audit",
                "failed mutation audited as a success",
                case,
                request_id,
                f"audit rows {audited}; errors: {json.dumps(errors)[:800]}",
            )
        )
    if isinstance(data, dict) and any(v is not None for v in data.values()):
        found.append(
            Problem("data with errors", "failed mutation returned data", case, request_id, json.dumps(body)[:1500])
        )
    return found
