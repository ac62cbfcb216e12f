"""Compiled reads (issue 16), first step: SQL functions that write values as Lodge's responses do.

A compiled read builds its JSON text in PostgreSQL and hands it to the client unchanged, so every
value must come out of PostgreSQL exactly as orjson and the scalars write it from Python:

- `lodge_float(float8)`: orjson's float text (fixed notation from 1e-5 up to 1e16, with `.0`
  when integral; `1e+16`, `1e-6` beyond), NULL for NaN and the infinities (no JSON for them);
- `lodge_ts(timestamptz)`: `datetime.isoformat()` of the UTC time (`2026-12-06T01:02:03+00:00`,
  microseconds only when there are some), NULL outside years 1-9999;
- `lodge_json(jsonb)`: what the Python path writes for a jsonb value (orjson of orjson's reading
  of its text: no spaces, decimals as doubles, integers past 64 bits as doubles, jsonb's key order);
- `lodge_cursor(kind, position)`: `app.api.pagination.encode_cursor` (URL-safe base64 of
  `kind:position`, unpadded; PostgreSQL's base64 breaks lines, which are removed).

The common cases are one-expression SQL functions, which PostgreSQL inlines into the calling
statement; the rare float layouts go to a plpgsql helper. The digits match only while
`extra_float_digits` > 0 (PostgreSQL's default, which Lodge's connections pin). Nothing uses
them yet (docs/compiled-reads.md); tests/api/test_compiled_encode.py holds them to the Python
output on generated values.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = [
    r"""
-- PostgreSQL's shortest text of a double in exponent form ('-1.2345e-05', '1.2345678901234568e+15')
-- laid out in fixed notation, as orjson writes 1e-5 <= |x| < 1e-4 and 1e15 <= |x| < 1e16.
CREATE FUNCTION lodge_float_fixed(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    sign text := CASE WHEN left(t, 1) = '-' THEN '-' ELSE '' END;
    body text := ltrim(t, '-');
    mantissa text := split_part(body, 'e', 1);
    exponent int := split_part(body, 'e', 2)::int;
    digits text := replace(mantissa, '.', '');
    point int := exponent + 1;  -- digits before the decimal point
BEGIN
    IF point <= 0 THEN
        RETURN sign || '0.' || repeat('0', -point) || digits;
    ELSIF point >= length(digits) THEN
        RETURN sign || digits || repeat('0', point - length(digits)) || '.0';
    END IF;
    RETURN sign || left(digits, point) || '.' || substr(digits, point + 1);
END$$
""",
    r"""
CREATE FUNCTION lodge_float_rare(x float8) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    body text;
    m numeric;
    e int;
    r numeric;
    digits text;
    t text;
BEGIN
    IF x = 'NaN'::float8 OR x = 'Infinity'::float8 OR x = '-Infinity'::float8 THEN
        RETURN NULL;  -- no JSON number for these: the caller bails
    END IF;
    -- PostgreSQL's digits are the closest to x, but not always the fewest (it writes
    -- 2.1375432750925318e+17 where 2.137543275092532e+17 reads back as the same double, as orjson
    -- writes it): keep its digits, rounded to the fewest that still read back as x.
    body := x::text;
    IF strpos(body, 'e') = 0 THEN
        body := to_char(abs(x), 'FM9.99999999999999999EEEE');  -- fixed text: into exponent form
        body := (split_part(body, 'e', 1)::numeric)::text || 'e' || split_part(body, 'e', 2);
    END IF;
    body := ltrim(body, '-');
    m := split_part(body, 'e', 1)::numeric;
    e := split_part(body, 'e', 2)::int;
    r := m;
    FOR p IN 1..(length(replace(split_part(body, 'e', 1), '.', '')) - 1) LOOP
        BEGIN
            IF (round(m, p - 1)::text || 'e' || e)::float8 = abs(x) THEN
                r := round(m, p - 1);
                EXIT;
            END IF;
        EXCEPTION WHEN numeric_value_out_of_range THEN
            NULL;  -- rounded past the largest or below the smallest double: more digits
        END;
    END LOOP;
    IF r >= 10 THEN
        r := r / 10;
        e := e + 1;
    END IF;
    digits := rtrim(rtrim(r::text, '0'), '.');
    t := CASE WHEN x < 0 THEN '-' ELSE '' END || digits || 'e' || CASE WHEN e >= 0 THEN '+' ELSE '-' END || abs(e);
    IF abs(x) >= 1e16 OR abs(x) < 1e-5 THEN
        RETURN t;  -- '1e+16', '1.7976931348623157e+308', '1e-7': orjson's layout
    END IF;
    RETURN lodge_float_fixed(t);  -- 1e-5 <= |x| < 1e-4 and 1e15 <= |x| < 1e16: fixed notation
END$$
""",
    r"""
CREATE FUNCTION lodge_float(x float8) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN x = 0 THEN x::text || '.0'  -- '0.0', '-0.0'
    WHEN abs(x) >= 1e-4 AND abs(x) < 1e15 THEN
      CASE WHEN strpos(x::text, '.') = 0 THEN x::text || '.0' ELSE x::text END
    ELSE lodge_float_rare(x)
  END$$
""",
    r"""
CREATE FUNCTION lodge_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN t >= '0001-01-01 00:00+00' AND t < '10000-01-01 00:00+00' THEN
    to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
    || CASE WHEN date_trunc('second', t) = t THEN '' ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
    || '+00:00'
  END$$
""",
    r"""
CREATE FUNCTION lodge_json_rare(j jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    parts text[] := '{}';
    k text;
    v jsonb;
    t text;
BEGIN
    CASE jsonb_typeof(j)
    WHEN 'object' THEN
        FOR k, v IN SELECT e.key, e.value FROM jsonb_each(j) WITH ORDINALITY AS e(key, value, i) ORDER BY e.i LOOP
            parts := parts || (to_json(k)::text || ':' || lodge_json_rare(v));
        END LOOP;
        RETURN '{' || array_to_string(parts, ',') || '}';
    WHEN 'array' THEN
        FOR v IN SELECT e.value FROM jsonb_array_elements(j) WITH ORDINALITY AS e(value, i) ORDER BY e.i LOOP
            parts := parts || lodge_json_rare(v);
        END LOOP;
        RETURN '[' || array_to_string(parts, ',') || ']';
    WHEN 'number' THEN
        t := j::text;
        -- orjson reads an integer in [-2^63, 2^64 - 1] as an integer, anything else as a double.
        IF t ~ '^-?[0-9]+$' AND t::numeric BETWEEN -9223372036854775808 AND 18446744073709551615 THEN
            RETURN (t::numeric)::text;  -- '-0' -> '0'
        END IF;
        RETURN lodge_float(t::numeric::float8);
    ELSE
        RETURN j::text;  -- strings (jsonb escapes as orjson does), true, false, null
    END CASE;
END$$
""",
    r"""
CREATE FUNCTION lodge_json(j jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN j::text ~ '[0-9][.]|[0-9]{19}' THEN lodge_json_rare(j)  -- decimals, integers past 64 bits
    ELSE regexp_replace(j::text, '("(?:[^"\\]|\\.)*")|([,:]) ', '\1\2', 'g')
  END$$
""",
    r"""
CREATE FUNCTION lodge_cursor(kind text, pos text) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT rtrim(translate(encode(convert_to(kind || ':' || pos, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')$$
""",
]


def upgrade() -> None:
    for statement in FUNCTIONS:
        op.execute(statement)


def downgrade() -> None:
    for signature in (
        "lodge_cursor(text, text)",
        "lodge_json(jsonb)",
        "lodge_json_rare(jsonb)",
        "lodge_ts(timestamptz)",
        "lodge_float(float8)",
        "lodge_float_rare(float8)",
        "lodge_float_fixed(text)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
