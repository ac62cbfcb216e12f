"""`POST /ingest` as log shippers call it: the request bodies and headers Vector, Fluent Bit and
Logstash send out of the box, read back through GraphQL (message, level, event time, attributes).

The bodies follow each shipper's own encoder: Fluent Bit's http output (`Format json`: a JSON array
with `date` as a double; `json_lines`: newline-delimited, `application/x-ndjson`), Vector's http
sink (codec json: a JSON array, `application/json`; `framing.method = "newline_delimited"`:
newline-delimited with no trailing newline; `compression = "zlib"` is `Content-Encoding: deflate`)
and Logstash's http output (`format => "json_batch"`: an array; `"json"`: one object).
"""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.support import GraphQLWS, LiveServer, Tenant, new_tenant, wait_for_subscriber

LOGS = """
query($p: ID!) { logs(projectId: $p, first: 100) { nodes { log level occurredAt attributes createdAt } } }
"""
INGEST_ONE = "mutation($input: LogInput!) { ingestLog(input: $input) { id log level occurredAt } }"


async def stored(server: LiveServer, t: Tenant) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["nodes"]
    return nodes


def at(node: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(node["occurredAt"])


async def post(server: LiveServer, body: bytes, **headers: str) -> dict[str, Any]:
    response = await server.http.post("/ingest", content=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_fluent_bit_format_json_gzip(server: LiveServer) -> None:
    # [OUTPUT] Name http, Format json, Compress gzip, Header X-API-Key ... (json_date_key date, double)
    t = await new_tenant(server)
    records = [
        {"date": 1712345678.123456, "log": "GET /healthz 200", "stream": "stdout", "level": "info"},
        {"date": 1712345679.5, "log": "upstream timed out", "stream": "stderr", "level": "warning"},
        {"date": 1712345680.0, "log": "no level here", "stream": "stdout"},
    ]
    result = await post(
        server,
        gzip.compress(orjson.dumps(records)),
        **{"content-type": "application/json", "content-encoding": "gzip", "user-agent": "Fluent-Bit"},
        **{"x-api-key": t.secret},
    )
    assert result["accepted"] == 3 and len(result["ids"]) == 3
    logs = await stored(server, t)
    assert [(n["log"], n["level"], n["attributes"]) for n in logs] == [
        ("GET /healthz 200", "INFO", {"stream": "stdout"}),
        ("upstream timed out", "WARN", {"stream": "stderr"}),
        ("no level here", "INFO", {"stream": "stdout"}),
    ]
    assert at(logs[0]) == datetime(2024, 4, 5, 19, 34, 38, 123456, tzinfo=UTC)
    assert at(logs[1]) == datetime(2024, 4, 5, 19, 34, 39, 500000, tzinfo=UTC)
    # The event time is the sender's; createdAt stays Lodge's own.
    assert datetime.fromisoformat(logs[0]["createdAt"]) > at(logs[0])


async def test_fluent_bit_json_lines_iso8601(server: LiveServer) -> None:
    # Format json_lines, json_date_format iso8601: one record a line, each ending in a newline.
    t = await new_tenant(server)
    lines = [
        {"date": "2024-04-05T19:34:38.000681Z", "log": "worker started", "level": "NOTICE"},
        {"date": "2024-04-05T19:34:39.000000Z", "log": "disk at 91%", "level": "Crit"},
    ]
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    await post(server, body, **{"content-type": "application/x-ndjson", "authorization": f"ApiKey {t.secret}"})
    logs = await stored(server, t)
    assert [(n["log"], n["level"], n["attributes"]) for n in logs] == [
        ("worker started", "INFO", None),
        ("disk at 91%", "ERROR", None),
    ]
    assert at(logs[0]) == datetime(2024, 4, 5, 19, 34, 38, 681, tzinfo=UTC)


async def test_vector_http_sink_json_codec_gzip(server: LiveServer) -> None:
    # sinks.lodge: type http, encoding.codec json, compression gzip -> a JSON array, application/json.
    t = await new_tenant(server)
    events = [
        {
            "file": "/var/log/app.log",
            "host": "web-1",
            "message": "payment accepted",
            "source_type": "file",
            "timestamp": "2024-04-05T19:34:38.123456789Z",
        },
        {  # from Vector's syslog source
            "appname": "sshd",
            "facility": "auth",
            "host": "web-1",
            "hostname": "web-1",
            "message": "Failed password for root",
            "procid": 4242,
            "severity": "err",
            "source_type": "syslog",
            "timestamp": "2024-04-05T19:34:39Z",
        },
    ]
    body = b"[" + b",".join(orjson.dumps(e) for e in events) + b"]"
    headers = {"content-type": "application/json", "content-encoding": "gzip", "user-agent": "Vector/0.50.0"}
    await post(server, gzip.compress(body), **headers, **{"x-api-key": t.secret})
    logs = await stored(server, t)
    assert [(n["log"], n["level"]) for n in logs] == [
        ("payment accepted", "INFO"),
        ("Failed password for root", "ERROR"),
    ]
    assert logs[0]["attributes"] == {"file": "/var/log/app.log", "host": "web-1", "source_type": "file"}
    assert logs[1]["attributes"] == {
        "appname": "sshd",
        "facility": "auth",
        "host": "web-1",
        "hostname": "web-1",
        "procid": 4242,
        "source_type": "syslog",
    }
    assert at(logs[0]) == datetime(2024, 4, 5, 19, 34, 38, 123456, tzinfo=UTC)
    assert at(logs[1]) == datetime(2024, 4, 5, 19, 34, 39, tzinfo=UTC)


async def test_vector_newline_delimited_zlib(server: LiveServer) -> None:
    # framing.method newline_delimited (no trailing newline), compression zlib -> Content-Encoding: deflate.
    t = await new_tenant(server)
    events = [
        {"message": "cache warm", "timestamp": "2024-04-05T19:34:38Z", "level": "debug", "pod": "api-7"},
        {"message": "cache cold", "timestamp": "2024-04-05T19:34:40+02:00", "level": "TRACE", "pod": "api-7"},
    ]
    body = zlib.compress(b"\n".join(orjson.dumps(e) for e in events))
    headers = {"content-type": "application/x-ndjson", "content-encoding": "deflate", "x-api-key": t.secret}
    assert (await post(server, body, **headers))["accepted"] == 2
    logs = await stored(server, t)
    assert [(n["log"], n["level"], n["attributes"]) for n in logs] == [
        ("cache warm", "DEBUG", {"pod": "api-7"}),
        ("cache cold", "DEBUG", {"pod": "api-7"}),
    ]
    assert at(logs[1]) == datetime(2024, 4, 5, 17, 34, 40, tzinfo=UTC)


async def test_logstash_http_output(server: LiveServer) -> None:
    # format => "json_batch", http_compression => true; then format => "json" (one event a request).
    t = await new_tenant(server)
    batch = [
        {
            "@timestamp": "2024-04-05T19:34:38.123Z",
            "@version": "1",
            "message": "disk almost full",
            "host": {"name": "web-1"},
            "log": {"level": "warn", "file": {"path": "/var/log/syslog"}},
            "event": {"original": "Apr  5 19:34:38 web-1 disk almost full"},
        }
    ]
    headers = {"content-type": "application/json", "content-encoding": "gzip", "x-api-key": t.secret}
    await post(server, gzip.compress(orjson.dumps(batch)), **headers)
    single = {"@timestamp": "2024-04-05T19:34:39.000Z", "@version": "1", "message": "ok", "severity": "Information"}
    await post(server, orjson.dumps(single), **{"content-type": "application/json", "x-api-key": t.secret})
    logs = await stored(server, t)
    assert [(n["log"], n["level"]) for n in logs] == [("disk almost full", "WARN"), ("ok", "INFO")]
    # Filebeat/ECS `log` is an object beside the `message` string: the string is the message, the
    # object (with the level read from it) stays an attribute.
    assert logs[0]["attributes"] == {
        "@version": "1",
        "host": {"name": "web-1"},
        "log": {"level": "warn", "file": {"path": "/var/log/syslog"}},
        "event": {"original": "Apr  5 19:34:38 web-1 disk almost full"},
    }
    assert at(logs[0]) == datetime(2024, 4, 5, 19, 34, 38, 123000, tzinfo=UTC)


async def test_field_names_levels_and_epoch_units(server: LiveServer) -> None:
    t = await new_tenant(server)
    lines: list[tuple[dict[str, Any], str, str, datetime | None]] = [
        # (record, message, level, event time)
        ({"msg": "pino", "level": 30, "time": 1712345678123}, "pino", "INFO", datetime(2024, 4, 5, 19, 34, 38, 123000)),
        ({"msg": "pino fatal", "level": 60}, "pino fatal", "ERROR", None),
        (
            {"body": "otel", "severityText": "WARNING", "timestamp": "1712345678123456789"},
            "otel",
            "WARN",
            datetime(2024, 4, 5, 19, 34, 38, 123456),
        ),
        ({"body": {"k": [1, 2]}, "severity_number": 17}, '{"k":[1,2]}', "ERROR", None),
        ({"body": "otel debug", "severity_number": 5, "date": 1712345678123456}, "otel debug", "DEBUG", None),
        (
            {"message": "syslog 4", "severity": 4, "date": 1712345678},
            "syslog 4",
            "WARN",
            datetime(2024, 4, 5, 19, 34, 38),
        ),
        ({"message": "syslog 7", "level": "7"}, "syslog 7", "DEBUG", None),
        ({"message": "syslog 0", "severity_text": 0}, "syslog 0", "ERROR", None),
        ({"message": "syslog 6", "log.level": 6}, "syslog 6", "INFO", None),
        ({"message": "emerg", "level": " EMERG "}, "emerg", "ERROR", None),
        ({"message": "fatal", "level": "Fatal"}, "fatal", "ERROR", None),
        ({"message": "alert", "level": "alert"}, "alert", "ERROR", None),
        (
            {"log": "wins over message", "message": "kept", "msg": "kept too", "level": None},
            "wins over message",
            "INFO",
            None,
        ),
    ]
    body = b"\n".join(orjson.dumps(record) for record, *_ in lines)
    await post(server, body, **{"x-api-key": t.secret})
    logs = await stored(server, t)
    for node, (record, message, level, occurred) in zip(logs, lines, strict=True):
        assert (node["log"], node["level"]) == (message, level), record
        if occurred is not None:
            assert at(node) == occurred.replace(tzinfo=UTC), record
    assert logs[4]["occurredAt"] is not None and at(logs[4]) == datetime(2024, 4, 5, 19, 34, 38, 123456, tzinfo=UTC)
    assert logs[1]["occurredAt"] is None
    assert logs[-1]["attributes"] == {"message": "kept", "msg": "kept too", "level": None}


async def test_unknown_fields_join_the_attributes(server: LiveServer) -> None:
    t = await new_tenant(server)
    line = {"log": "x", "attributes": {"a": 1, "host": "explicit"}, "host": "top", "k8s": {"pod": "p"}}
    await post(server, orjson.dumps(line), **{"x-api-key": t.secret})
    (node,) = await stored(server, t)
    # `attributes` is Lodge's own field and keeps its value when a top-level field has the same name.
    assert node["attributes"] == {"a": 1, "host": "explicit", "k8s": {"pod": "p"}}
    assert node["occurredAt"] is None


async def test_graphql_ingestion_takes_the_event_time(server: LiveServer) -> None:
    t = await new_tenant(server)
    data = await server.data(
        INGEST_ONE, {"input": {"log": "from graphql", "occurredAt": "2024-04-05T21:34:38+02:00"}}, api_key=t.secret
    )
    assert data["ingestLog"]["occurredAt"] == "2024-04-05T19:34:38+00:00"
    no_time = await server.data(INGEST_ONE, {"input": {"log": "no time"}}, api_key=t.secret)
    assert no_time["ingestLog"]["occurredAt"] is None
    bad = await server.gql(INGEST_ONE, {"input": {"log": "x", "occurredAt": "yesterday"}}, api_key=t.secret)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # The enum takes Lodge's four levels only; aliases are for shippers.
    alias = await server.gql(INGEST_ONE, {"input": {"log": "x", "level": "WARNING"}}, api_key=t.secret)
    assert alias["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert [n["log"] for n in await stored(server, t)] == ["from graphql", "no time"]


async def test_live_tail_carries_the_event_time(server: LiveServer) -> None:
    t = await new_tenant(server)
    subscription = "subscription($p: ID!) { logAdded(projectId: $p) { log level occurredAt attributes } }"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(subscription, {"p": t.project_id})
        await wait_for_subscriber(server, t.project_id)
        record = {"date": 1712345678.25, "log": "live", "level": "warning", "stream": "stdout"}
        await post(server, gzip.compress(orjson.dumps([record])), **{"content-encoding": "gzip", "x-api-key": t.secret})
        event = (await ws.next_data())["logAdded"]
    assert event == {
        "log": "live",
        "level": "WARN",
        "occurredAt": "2024-04-05T19:34:38.250000+00:00",
        "attributes": {"stream": "stdout"},
    }


async def test_a_shippers_buffer_may_hold_more_than_one_graphql_batch(server: LiveServer) -> None:
    # Fluent Bit sends a whole chunk (up to ~2 MB) in one request and drops it on a 4xx: /ingest
    # takes LODGE_MAX_INGEST_RECORDS records, more than ingestLogs' LODGE_MAX_BATCH_SIZE.
    t = await new_tenant(server)
    count = server.deps.settings.max_batch_size * 3
    body = gzip.compress(orjson.dumps([{"date": 1767225600.5, "log": f"line {i}"} for i in range(count)]))
    response = await server.http.post(
        "/ingest",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "X-API-Key": t.secret},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == count
    data = await server.data(
        "query($p: ID!) { logs(projectId: $p) { totalCount } }", {"p": t.project_id}, token=t.token
    )
    assert data["logs"]["totalCount"] == count
