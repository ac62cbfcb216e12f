"""The SQL formatters of compiled reads (migration 0009) write values exactly as the Python path
does: orjson for floats, `datetime.isoformat()` for times, `encode_cursor` for cursors. Each check
runs one statement over many generated values and compares the text, value by value."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from app.api.pagination import encode_cursor
from tests.conftest import _asyncpg_dsn
from tests.support import LiveServer

EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    40.0,
    0.1,
    0.30000000000000004,
    1e-4,
    9.999999999999999e-05,
    1e-5,
    1.2345e-5,
    9.99999e-06,
    1e-6,
    1e-7,
    1.5e-7,
    5e-324,
    2.2250738585072014e-308,
    1e14,
    999999999999999.9,
    1e15,
    1e15 + 0.5,
    1234567890123456.8,
    9007199254740992.0,
    9999999999999998.0,
    1e16,
    1.2345e16,
    1e22,
    1.7976931348623157e308,
    -1e-7,
    -1234567890123456.8,
    -1e16,
    123456789012345.6,
    0.5,
    2.5e-5,
]


@pytest.fixture
async def pg(server: LiveServer, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated test database (the shared server migrated it)."""
    conn = await asyncpg.connect(_asyncpg_dsn(database_url), server_settings={"extra_float_digits": "1"})
    try:
        yield conn
    finally:
        await conn.close()


def random_doubles(count: int, seed: int = 16) -> list[float]:
    rng = random.Random(seed)
    values: list[float] = []
    while len(values) < count:
        (value,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if value == value and value not in (float("inf"), float("-inf")):
            values.append(value)
    # Values near every boundary of the layouts, at several magnitudes.
    for exponent in range(-12, 20):
        for mantissa in (1.0, 1.5, 9.99999, 9.999999999999998):
            values += [mantissa * 10.0**exponent, -mantissa * 10.0**exponent]
    values += [rng.uniform(-180, 180) for _ in range(5_000)]  # coordinates, the common case
    return values + EDGE_FLOATS


async def mismatches(
    pg: asyncpg.Connection, sql: str, values: list[object], expected: list[str | None]
) -> list[object]:
    got = await pg.fetch(
        f"SELECT i, {sql} AS text FROM unnest($1::{'float8' if isinstance(values[0], float) else 'timestamptz'}[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
        values,
    )
    return [
        (values[row["i"] - 1], row["text"], expected[row["i"] - 1])
        for row in got
        if row["text"] != expected[row["i"] - 1]
    ]


async def test_lodge_float_writes_what_orjson_writes(pg: asyncpg.Connection) -> None:
    values = random_doubles(100_000)
    expected = [orjson.dumps(v).decode() for v in values]
    wrong = await mismatches(pg, "lodge_float(v)", list(values), list(expected))
    assert len(wrong) == 0, wrong[:10]


async def test_lodge_float_has_no_json_for_nan_and_infinity(pg: asyncpg.Connection) -> None:
    got = await pg.fetch(
        "SELECT lodge_float(v) AS t FROM unnest($1::float8[]) AS u(v)", [float("nan"), float("inf"), -float("inf")]
    )
    assert [row["t"] for row in got] == [None, None, None]


async def test_lodge_ts_writes_what_isoformat_writes(pg: asyncpg.Connection) -> None:
    rng = random.Random(9)
    start = datetime(1, 1, 1, tzinfo=UTC)
    span = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - start) // timedelta(microseconds=1)
    values = [start + timedelta(microseconds=rng.randrange(span)) for _ in range(20_000)]
    values += [v.replace(microsecond=0) for v in values[:2_000]]  # whole seconds: no fraction
    # (asyncpg sends datetime.min and max as -infinity and infinity: one microsecond inside them)
    values += [datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)]
    values += [datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)]
    values += [datetime(2026, 12, 6, 1, 2, 3, 1, tzinfo=UTC), datetime(2026, 12, 6, 1, 2, 3, 100000, tzinfo=UTC)]
    expected = [v.isoformat() for v in values]
    wrong = await mismatches(pg, "lodge_ts(v)", list(values), list(expected))
    assert wrong[:10] == [] and len(wrong) == 0


async def test_lodge_cursor_writes_what_encode_cursor_writes(pg: asyncpg.Connection) -> None:
    rng = random.Random(5)
    alphabet = "abcXYZ019:|-_ é€\U0001f600'\"\\"
    cases = [
        (
            rng.choice(["log", "vendor", "location", "guild"]),
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120))),
        )
        for _ in range(5_000)
    ]
    cases.append(("vendor", "2026-12-06T01:02:03.000001+00:00|" + "0" * 36))
    got = await pg.fetch(
        "SELECT i, lodge_cursor(k, p) AS c FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(k, p, i) ORDER BY i",
        [k for k, _ in cases],
        [p for _, p in cases],
    )
    wrong = [(cases[r["i"] - 1], r["c"]) for r in got if r["c"] != encode_cursor(*cases[r["i"] - 1])]
    assert wrong[:5] == [] and len(wrong) == 0


def random_json(rng: random.Random, depth: int = 0) -> object:
    """JSON values that reach every layout: escapes, 64-bit edges, decimals, nesting."""
    r = rng.random()
    if depth > 3 or r < 0.45:
        choice = rng.randrange(7)
        if choice == 0:
            return rng.choice([None, True, False])
        if choice == 1:
            return rng.randrange(-(10**6), 10**6)
        if choice == 2:
            return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**20, 10**19])
        if choice == 3:
            return rng.uniform(-1e6, 1e6)
        if choice == 4:
            return rng.choice([0.0, 1.5, 2.5, 1e-7, 1e-5, 1e16, 0.1, 123.456, 1e300])
        alphabet = 'abcXYZ "\\/\n\t\x01\x1f\x7f:,.é€\u2028\U0001f600 0123456789'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
    if r < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    keys = 'abcAB é:,"'
    return {
        "".join(rng.choice(keys) for _ in range(rng.randrange(0, 6))): random_json(rng, depth + 1)
        for _ in range(rng.randrange(0, 5))
    }


async def test_lodge_json_writes_what_orjson_writes(pg: asyncpg.Connection) -> None:
    """The Python path reads a jsonb column's text with orjson and writes it with orjson."""
    rng = random.Random(3)
    texts = [json.dumps(random_json(rng), ensure_ascii=False) for _ in range(20_000)]
    texts += ['{"a": 1.50}', "1e20", "-0", "[]", "{}", '""', "0", "false", "null", '{"b": 1, "a": 2, "aa": 3}']
    rows = await pg.fetch(
        "SELECT i, j::text AS stored, lodge_json(j) AS written "
        "FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i), LATERAL (SELECT s::jsonb AS j) AS parsed ORDER BY i",
        texts,
    )
    wrong = [
        (row["stored"], row["written"])
        for row in rows
        if row["written"] != orjson.dumps(orjson.loads(row["stored"])).decode()
    ]
    assert len(rows) == len(texts) and len(wrong) == 0, wrong[:10]


async def test_the_common_cases_are_inlined(pg: asyncpg.Connection) -> None:
    """One-expression SQL functions are inlined into the statement: no call per value."""
    plan = await pg.fetchval(
        "EXPLAIN (VERBOSE, FORMAT TEXT) SELECT lodge_ts(t), lodge_cursor('log', t::text) "
        "FROM unnest(ARRAY[now()]) AS u(t)"
    )
    rows = await pg.fetch(
        "EXPLAIN (VERBOSE) SELECT lodge_ts(t), lodge_cursor('log', t::text), lodge_json(to_jsonb(t)), "
        "lodge_float(1.5::float8 * extract(epoch FROM t)) "
        "FROM unnest(ARRAY[now()]) AS u(t)"
    )
    text = "\n".join(row[0] for row in rows)
    assert plan and "lodge_ts" not in text and "lodge_cursor" not in text and "lodge_float(" not in text, text
    assert "lodge_json(" not in text, text
