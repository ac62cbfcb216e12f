from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import INGEST_LOGS, LiveServer, Tenant, ingest, new_api_key, new_tenant, new_user

LOGS = """
query($projectId: ID!, $first: Int, $after: String, $last: Int, $before: String, $filter: LogFilter) {
  logs(projectId: $projectId, first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    totalCount
    edges { cursor node { id log level attributes apiKey { id } project { id } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
INGEST_ONE = "mutation($input: LogInput!) { ingestLog(input: $input) { id log level attributes cursor } }"


async def count_logs(server: LiveServer, t: Tenant) -> int:
    data = await server.data(LOGS, {"projectId": t.project_id, "first": 0}, token=t.token)
    total: int = data["logs"]["totalCount"]
    return total


async def test_ingest_and_read_back_in_order(server: LiveServer) -> None:
    t = await new_tenant(server)
    one = await server.data(
        INGEST_ONE, {"input": {"log": "hello", "level": "WARN", "attributes": {"a": 1}}}, api_key=t.secret
    )
    assert one["ingestLog"]["level"] == "WARN" and one["ingestLog"]["attributes"] == {"a": 1}
    ids = await ingest(server, t.secret, [f"line {i}" for i in range(10)])
    assert len(ids) == 10

    page = (await server.data(LOGS, {"projectId": t.project_id, "first": 4}, token=t.token))["logs"]
    assert page["totalCount"] == 11
    assert [e["node"]["log"] for e in page["edges"]] == ["hello", "line 0", "line 1", "line 2"]
    assert page["edges"][0]["node"]["apiKey"]["id"] == t.key_id
    assert page["pageInfo"]["hasNextPage"] is True

    seen = [e["node"]["log"] for e in page["edges"]]
    after = page["pageInfo"]["endCursor"]
    while True:
        page = (await server.data(LOGS, {"projectId": t.project_id, "first": 4, "after": after}, token=t.token))["logs"]
        seen += [e["node"]["log"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ["hello"] + [f"line {i}" for i in range(10)]

    tail = (await server.data(LOGS, {"projectId": t.project_id, "last": 2}, token=t.token))["logs"]
    assert [e["node"]["log"] for e in tail["edges"]] == ["line 8", "line 9"]
    assert tail["pageInfo"]["hasPreviousPage"] is True
    before = await server.data(
        LOGS, {"projectId": t.project_id, "last": 2, "before": tail["pageInfo"]["startCursor"]}, token=t.token
    )
    assert [e["node"]["log"] for e in before["logs"]["edges"]] == ["line 6", "line 7"]


async def test_cursors_are_stable_under_concurrent_inserts(server: LiveServer) -> None:
    t = await new_tenant(server)
    await ingest(server, t.secret, ["a", "b", "c"])
    first = (await server.data(LOGS, {"projectId": t.project_id, "first": 2}, token=t.token))["logs"]
    await ingest(server, t.secret, ["d"])
    rest = await server.data(LOGS, {"projectId": t.project_id, "after": first["pageInfo"]["endCursor"]}, token=t.token)
    assert [e["node"]["log"] for e in rest["logs"]["edges"]] == ["c", "d"]


async def test_filters(server: LiveServer) -> None:
    t = await new_tenant(server)
    other_key, other_secret = await new_api_key(server, t.token, t.project_id)
    await server.data(
        INGEST_LOGS,
        {
            "inputs": [
                {"log": "Disk almost FULL", "level": "WARN"},
                {"log": "all good", "level": "INFO"},
                {"log": "100% done_now", "level": "ERROR"},
            ]
        },
        api_key=t.secret,
    )
    await ingest(server, other_secret, ["from the other key"], level="ERROR")

    async def logs(filter: dict[str, Any]) -> list[str]:
        data = await server.data(LOGS, {"projectId": t.project_id, "filter": filter}, token=t.token)
        return [e["node"]["log"] for e in data["logs"]["edges"]]

    assert await logs({"level": "WARN"}) == ["Disk almost FULL"]
    assert await logs({"search": "full"}) == ["Disk almost FULL"]
    assert await logs({"search": "100%"}) == ["100% done_now"]
    assert await logs({"search": "_"}) == ["100% done_now"]
    assert await logs({"apiKeyId": other_key}) == ["from the other key"]
    assert await logs({"level": "ERROR", "apiKeyId": t.key_id}) == ["100% done_now"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await logs({"since": future}) == []
    assert len(await logs({"until": future})) == 4


async def test_idempotency_keys_deduplicate(server: LiveServer) -> None:
    t = await new_tenant(server)
    first = await server.data(
        INGEST_LOGS,
        {
            "inputs": [
                {"log": "a", "idempotencyKey": "k1"},
                {"log": "b", "idempotencyKey": "k2"},
                {"log": "a again", "idempotencyKey": "k1"},
            ]
        },
        api_key=t.secret,
    )
    result = first["ingestLogs"]
    assert result["accepted"] == 2 and result["duplicates"] == 1
    assert result["ids"][0] == result["ids"][2] != result["ids"][1]

    again = (
        await server.data(
            INGEST_LOGS, {"inputs": [{"log": "b", "idempotencyKey": "k2"}, {"log": "c"}]}, api_key=t.secret
        )
    )["ingestLogs"]
    assert again["accepted"] == 1 and again["duplicates"] == 1 and again["ids"][0] == result["ids"][1]
    single = await server.data(INGEST_ONE, {"input": {"log": "ignored", "idempotencyKey": "k1"}}, api_key=t.secret)
    assert single["ingestLog"]["id"] == result["ids"][0] and single["ingestLog"]["log"] == "a"
    assert await count_logs(server, t) == 3


async def test_bad_api_keys_are_unauthenticated_and_write_nothing(server: LiveServer) -> None:
    t = await new_tenant(server)
    revoked_id, revoked = await new_api_key(server, t.token, t.project_id)
    await server.data("mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", {"id": revoked_id}, token=t.token)
    expiring_id, expiring = await new_api_key(
        server, t.token, t.project_id, expiresAt=(datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    )
    # Expire it without waiting: move expires_at into the past as time would.
    async with server.deps.db.session() as session:
        from sqlalchemy import text

        await session.execute(
            text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": expiring_id}
        )
        await session.commit()

    query = {"inputs": [{"log": "x"}]}
    assert await server.error_code(INGEST_LOGS, query) == "UNAUTHENTICATED"
    assert await server.error_code(INGEST_LOGS, query, api_key="lodge_wrong") == "UNAUTHENTICATED"
    assert await server.error_code(INGEST_LOGS, query, api_key=revoked) == "UNAUTHENTICATED"
    assert await server.error_code(INGEST_LOGS, query, api_key=expiring) == "UNAUTHENTICATED"
    assert await count_logs(server, t) == 0


async def test_batch_limits_are_all_or_nothing(server: LiveServer) -> None:
    t = await new_tenant(server)
    too_many = {"inputs": [{"log": str(i)} for i in range(1001)]}
    assert await server.error_code(INGEST_LOGS, too_many, api_key=t.secret) == "BAD_USER_INPUT"

    one_bad = [{"log": str(i)} for i in range(100)]
    one_bad[57]["attributes"] = ["not", "an", "object"]  # type: ignore[assignment]
    body = await server.gql(INGEST_LOGS, {"inputs": one_bad}, api_key=t.secret)
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "index": 57}

    bad_level = [{"log": "a"}, {"log": "b", "level": "LOUD"}]
    assert await server.error_code(INGEST_LOGS, {"inputs": bad_level}, api_key=t.secret) == "BAD_USER_INPUT"

    huge = {"input": {"log": "x" * (256 * 1024 + 1)}}
    assert await server.error_code(INGEST_ONE, huge, api_key=t.secret) == "BAD_USER_INPUT"
    assert await count_logs(server, t) == 0
    ok = await server.data(INGEST_LOGS, {"inputs": [{"log": str(i)} for i in range(1000)]}, api_key=t.secret)
    assert ok["ingestLogs"]["accepted"] == 1000


async def test_only_the_owner_reads_a_project(server: LiveServer) -> None:
    t = await new_tenant(server)
    stranger = await new_user(server)
    assert await server.error_code(LOGS, {"projectId": t.project_id}, token=stranger) == "FORBIDDEN"
    assert await server.error_code(LOGS, {"projectId": t.project_id}) == "UNAUTHENTICATED"
    other = await new_tenant(server)
    assert await server.error_code(LOGS, {"projectId": t.project_id}, api_key=other.secret) == "FORBIDDEN"
    assert await server.error_code(LOGS, {"projectId": "not-a-uuid"}, token=t.token) == "BAD_USER_INPUT"
    assert (
        await server.error_code(LOGS, {"projectId": t.project_id, "after": "garbage!"}, token=t.token)
        == "BAD_USER_INPUT"
    )
    assert await server.error_code(LOGS, {"projectId": t.project_id, "first": 501}, token=t.token) == "BAD_USER_INPUT"


async def test_project_crud(server: LiveServer) -> None:
    t = await new_tenant(server)
    stranger = await new_user(server)
    update = "mutation($id: ID!, $input: ProjectUpdate!) { updateProject(id: $id, input: $input) { name description } }"
    assert await server.error_code(update, {"id": t.project_id, "input": {"name": "x"}}, token=stranger) == "FORBIDDEN"
    updated = await server.data(update, {"id": t.project_id, "input": {"description": "d"}}, token=t.token)
    assert updated["updateProject"] == {"name": "p", "description": "d"}
    assert (
        await server.error_code(update, {"id": t.project_id, "input": {"name": "  "}}, token=t.token)
        == "BAD_USER_INPUT"
    )
    listed = await server.data("{ projects { totalCount nodes { id apiKeys { id prefix } } } }", token=t.token)
    assert listed["projects"]["totalCount"] == 1
    assert listed["projects"]["nodes"][0]["apiKeys"][0]["id"] == t.key_id
    await ingest(server, t.secret, ["bye"])
    assert (await server.data("mutation($id: ID!) { deleteProject(id: $id) }", {"id": t.project_id}, token=t.token))[
        "deleteProject"
    ]
    gone = await server.data("query($id: ID!) { project(id: $id) { id } }", {"id": t.project_id}, token=t.token)
    assert gone == {"project": None}
    assert await server.error_code(INGEST_LOGS, {"inputs": [{"log": "x"}]}, api_key=t.secret) == "UNAUTHENTICATED"


async def test_api_key_secret_is_only_stored_hashed(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with server.deps.db.session() as session:
        from sqlalchemy import text

        row = (await session.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": t.key_id})).mappings().one()
    assert t.secret not in json.dumps({k: str(v) for k, v in row.items()})
    assert t.secret.startswith(row["prefix"])
    used = await server.data(
        "query($id: ID!) { project(id: $id) { apiKeys { lastUsedAt } } }", {"id": t.project_id}, token=t.token
    )
    assert used["project"]["apiKeys"][0]["lastUsedAt"] is None
    await ingest(server, t.secret, ["touch"])
    used = await server.data(
        "query($id: ID!) { project(id: $id) { apiKeys { lastUsedAt } } }", {"id": t.project_id}, token=t.token
    )
    assert used["project"]["apiKeys"][0]["lastUsedAt"] is not None


async def test_ndjson_ingest(server: LiveServer) -> None:
    t = await new_tenant(server)
    lines = "\n".join(json.dumps({"log": f"shipped {i}", "level": "info", "attributes": {"i": i}}) for i in range(5))
    response = await server.http.post("/ingest", content=lines, headers={"x-api-key": t.secret})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 5
    assert await count_logs(server, t) == 5

    malformed = await server.http.post(
        "/ingest", content='{"log": "ok"}\n{not json', headers={"authorization": f"ApiKey {t.secret}"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "BAD_USER_INPUT" and malformed.json()["error"]["line"] == 2
    missing = await server.http.post("/ingest", content='{"log": "ok"}')
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHENTICATED"
    assert await count_logs(server, t) == 5


async def test_a_failed_mutation_saves_and_shows_nothing(server: LiveServer) -> None:
    t = await new_tenant(server)
    both = """mutation($id: ID!) {
      a: createProject(input: {name: "never"}) { id }
      b: updateProject(id: $id, input: {name: "x"}) { id }
    }"""
    body = await server.gql(both, {"id": "00000000-0000-0000-0000-000000000000"}, token=t.token)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    listed = await server.data("{ projects { nodes { name } } }", token=t.token)
    assert [p["name"] for p in listed["projects"]["nodes"]] == ["p"]


async def test_ingestion_stands_alone_in_its_mutation(server: LiveServer) -> None:
    t = await new_tenant(server)
    mixed = 'mutation { ingestLog(input: {log: "x"}) { id } createProject(input: {name: "y"}) { id } }'
    assert await server.error_code(mixed, api_key=t.secret) == "BAD_USER_INPUT"
    assert await count_logs(server, t) == 0


async def test_ingestion_stands_alone_through_fragments(server: LiveServer) -> None:
    t = await new_tenant(server)
    ingest = 'ingestLog(input: {log: "x"}) { id }'
    other = 'createProject(input: {name: "y"}) { id }'
    disguised = [
        f"mutation {{ ... on Mutation {{ {ingest} {other} }} }}",
        f"mutation {{ {ingest} ...F }} fragment F on Mutation {{ {other} }}",
        f"mutation {{ ...F }} fragment F on Mutation {{ ... on Mutation {{ {ingest} }} ...G }}"
        f" fragment G on Mutation {{ ... {{ {other} }} }}",
        f"mutation {{ ... @include(if: true) {{ {ingest} }} ... on Mutation {{ __typename }} }}",
        # A fragment cycle is reported by validation; counting fields must not loop on it.
        f"mutation {{ ...F }} fragment F on Mutation {{ {ingest} ...G }} fragment G on Mutation {{ {other} ...F }}",
    ]
    for document in disguised:
        body = await server.gql(document, api_key=t.secret)
        assert body.get("data") is None, document
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (document, body)
    assert await count_logs(server, t) == 0
    projects = await server.data("{ projects { nodes { name } } }", token=t.token)
    assert [p["name"] for p in projects["projects"]["nodes"]] == ["p"]
    # Fragments that hold ingestion alone are fine; the server is healthy.
    alone = f"mutation {{ ...F }} fragment F on Mutation {{ ... on Mutation {{ {ingest} }} }}"
    assert (await server.data(alone, api_key=t.secret))["ingestLog"]["id"]
    assert await count_logs(server, t) == 1


async def test_out_of_range_cursor_is_bad_input(server: LiveServer) -> None:
    import base64

    t = await new_tenant(server)
    huge = base64.urlsafe_b64encode(f"log:{2**70}".encode()).decode().rstrip("=")
    assert await server.error_code(LOGS, {"projectId": t.project_id, "after": huge}, token=t.token) == "BAD_USER_INPUT"
