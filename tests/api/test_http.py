from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support import LiveServer


async def test_health_and_readiness(server: LiveServer) -> None:
    assert (await server.http.get("/healthz")).json() == {"status": "ok"}
    ready = await server.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["broker"] == "ok"


async def test_graphiql_for_browsers(server: LiveServer) -> None:
    page = await server.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_request_id_is_echoed(server: LiveServer) -> None:
    response = await server.http.post("/graphql", json={"query": "{ me { id } }"}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len((await server.http.get("/healthz")).headers["x-request-id"]) == 32


async def test_a_clients_request_id_is_bounded_and_sanitised(server: LiveServer) -> None:
    for hostile in ("x" * 129, "<script>alert(1)</script>", "a b", "id\tinjected", "caf\u00e9"):
        headers = {b"x-request-id": hostile.encode("utf-8")}
        response = await server.http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
        replaced = response.headers["x-request-id"]
        assert replaced != hostile and len(replaced) == 32 and replaced.isalnum(), hostile


async def test_bound_values_stay_out_of_database_errors(server: LiveServer) -> None:
    secret = "argon2-hash-that-must-not-be-logged"
    async with server.deps.db.engine.connect() as conn:
        with pytest.raises(DBAPIError) as failure:
            await conn.execute(text("SELECT CAST(:v AS text), 1 / 0"), {"v": secret})
    assert "division by zero" in str(failure.value)
    assert secret not in str(failure.value)


async def test_deep_query_is_refused(server: LiveServer) -> None:
    levels = ["projects", "nodes", "owner"] * 10
    nested = "{ me { " + " { ".join(levels) + " { id" + " }" * (len(levels) + 2)
    assert nested.count("{") == nested.count("}") >= 30
    body = await server.gql(nested)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "depth" in body["errors"][0]["message"]


async def test_too_many_aliases_and_syntax_errors(server: LiveServer) -> None:
    aliases = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"
    assert (await server.gql(aliases))["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.gql("{ me { id "))["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.gql("{ nope }"))["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_body_limit(server: LiveServer) -> None:
    limit = server.deps.settings.max_body_bytes
    response = await server.http.post(
        "/graphql", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", "/graphql", 405, "BAD_USER_INPUT"),
        ("DELETE", "/graphql", 405, "BAD_USER_INPUT"),
        ("GET", "/nowhere", 404, "NOT_FOUND"),
    ],
)
async def test_refusals_outside_graphql_are_json_with_a_code(
    server: LiveServer, method: str, path: str, status: int, code: str
) -> None:
    response = await server.http.request(method, path, content=b"{}")
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == code and error["extensions"]["requestId"] == response.headers["x-request-id"]
    if status == 405:
        assert "POST" in response.headers["allow"]


async def test_a_wrong_method_on_ingest_answers_in_its_own_shape(server: LiveServer) -> None:
    response = await server.http.get("/ingest")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    error = response.json()["error"]
    assert error["code"] == "BAD_USER_INPUT" and error["requestId"] == response.headers["x-request-id"]
