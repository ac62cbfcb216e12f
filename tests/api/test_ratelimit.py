"""Rate limits: token buckets per API key, user or address; shared through Redis; RATE_LIMITED."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import websockets
from sqlalchemy import func, select
from sqlmodel import col

from app.accounts import models as accounts
from tests.conftest import make_settings
from tests.support import PASSWORD, TRANSPORT_WS, GraphQLWS, live_server, need, new_tenant, new_user

REGISTER = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }"


def limited(**limits: float) -> dict[str, float]:
    base = {
        "rate_limit_anonymous_per_second": 0.0,
        "rate_limit_user_per_second": 0.0,
        "rate_limit_api_key_per_second": 0.0,
    }
    return {**base, **limits}


async def test_anonymous_callers_are_limited_with_retry_after_and_nothing_written(database_url: str) -> None:
    settings = make_settings(**limited(rate_limit_anonymous_per_second=0.5, rate_limit_anonymous_burst=3))
    async with live_server(settings, database_url) as server:
        for _ in range(3):
            assert "errors" not in await server.gql("{ __typename }")
        email = f"limited-{uuid.uuid4().hex}@example.com"
        response = await server.http.post(
            "/graphql", json={"query": REGISTER, "variables": {"input": {"email": email, "password": PASSWORD}}}
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] >= 1
        async with server.deps.db.session() as session:
            found = await session.scalar(select(func.count()).where(col(accounts.User.email) == email))
        assert found == 0
        # Health checks, metrics and GraphiQL's page are never limited.
        assert (await server.http.get("/healthz")).status_code == 200
        assert (await server.http.get("/graphql", headers={"accept": "text/html"})).status_code == 200
        # A websocket connection takes a token too: refused at the handshake.
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(server.ws_url, subprotocols=[TRANSPORT_WS]):
                pass


async def test_each_user_and_key_has_a_bucket_of_their_own(database_url: str) -> None:
    settings = make_settings(**limited(rate_limit_user_per_second=0.5, rate_limit_user_burst=2))
    async with live_server(settings, database_url) as server:
        alice, bob = await new_user(server), await new_user(server)
        for _ in range(2):
            assert "errors" not in await server.gql("{ me { id } }", token=alice)
        refused = await server.http.post(
            "/graphql", json={"query": "{ me { id } }"}, headers={"authorization": f"Bearer {alice}"}
        )
        assert refused.status_code == 429
        assert "errors" not in await server.gql("{ me { id } }", token=bob)
        # A token that does not verify is not a user: it is limited as its address (unlimited here).
        assert (
            await server.http.post(
                "/graphql", json={"query": "{ __typename }"}, headers={"authorization": "Bearer forged"}
            )
        ).status_code == 200


async def test_buckets_are_shared_by_every_instance_through_redis(database_url: str, redis_url: str | None) -> None:
    need(redis_url is not None, "TEST_REDIS_URL is not set")
    secret = "shared-secret-" + uuid.uuid4().hex
    settings = make_settings(
        secret_key=secret,
        broadcast_url=redis_url,
        **limited(rate_limit_api_key_per_second=0.2, rate_limit_api_key_burst=3),
    )
    async with live_server(settings, database_url) as first, live_server(settings, database_url) as second:
        tenant = await new_tenant(first)
        headers = {"x-api-key": tenant.secret}
        # A key has a bucket of its own once it has worked on that instance (before, its address's).
        for server in (first, second):
            assert (await server.http.post("/ingest", json={"log": "hello"}, headers=headers)).status_code == 200
        statuses = [
            (await server.http.post("/ingest", json={"log": f"n{i}"}, headers=headers)).status_code
            for i, server in enumerate((first, second, first, second))
        ]
        assert statuses == [200, 200, 200, 429]
        body = (await second.http.post("/ingest", json={"log": "again"}, headers=headers)).json()
        assert body["error"]["code"] == "RATE_LIMITED"


async def test_without_redis_each_instance_limits_on_its_own(database_url: str) -> None:
    # Nothing listens on port 1: the limiter falls back to this process's buckets, and still limits.
    settings = make_settings(
        broadcast_url="redis://127.0.0.1:1/0",
        **limited(rate_limit_anonymous_per_second=0.2, rate_limit_anonymous_burst=2),
    )
    async with live_server(settings, database_url) as server:
        statuses = [
            (await server.http.post("/graphql", json={"query": "{ __typename }"})).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]


async def test_made_up_credentials_and_query_urls_do_not_escape_the_limit(database_url: str) -> None:
    settings = make_settings(**limited(rate_limit_anonymous_per_second=0.01, rate_limit_anonymous_burst=2))
    async with live_server(settings, database_url) as server:
        # Each request with a new random key would get a fresh bucket if keys were trusted unseen.
        statuses = [
            (
                await server.http.post(
                    "/graphql", json={"query": "{ __typename }"}, headers={"x-api-key": uuid.uuid4().hex}
                )
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        # A browser's GET with a query runs it, so it is limited (GraphiQL's page is not).
        ran = await server.http.get("/graphql", params={"query": "{ __typename }"}, headers={"accept": "text/html"})
        assert ran.status_code == 429
        # So does a persisted-query hash by GET, whatever Accept says (Apollo's link sends one).
        digest = hashlib.sha256(b"{ __typename }").hexdigest()
        extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})
        hashed = await server.http.get("/graphql", params={"extensions": extensions}, headers={"accept": "text/html"})
        assert hashed.status_code == 429
        assert (await server.http.get("/graphql", headers={"accept": "text/html"})).status_code == 200


async def test_each_operation_over_a_websocket_takes_a_token(database_url: str) -> None:
    settings = make_settings(**limited(rate_limit_anonymous_per_second=0.01, rate_limit_anonymous_burst=3))
    async with live_server(settings, database_url) as server:
        async with GraphQLWS.connect(server.ws_url) as ws:  # the handshake: one token
            for _ in range(2):
                await ws.subscribe("{ __typename }")
                assert (await ws.next_data()) == {"__typename": "Query"}
                assert (await ws.receive())["type"] == "complete"
            await ws.subscribe("{ __typename }")
            message = await ws.receive()
            errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
            assert errors[0]["extensions"]["code"] == "RATE_LIMITED" and errors[0]["extensions"]["retryAfter"] >= 1
