"""Sign-in limits: `login` and `register` are throttled by client address and by email, whatever
credential comes with them, before any password is hashed."""

from __future__ import annotations

import uuid
from typing import Any

from redis import asyncio as aioredis

from app.observability import metrics
from app.settings import Settings
from tests.conftest import make_settings
from tests.support import PASSWORD, GraphQLWS, LiveServer, live_server, need, new_user, unique_email

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }"
REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken } }"
# Per minute: no token comes back while a test runs.
SLOW = 0.001


def sign_in_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "rate_limit_login_address_per_minute": 0.0,
        "rate_limit_login_email_per_minute": 0.0,
        **overrides,
    }
    return make_settings(**values)


async def post(server: LiveServer, query: str, variables: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = await server.http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    # A field-level refusal: the document ran, the field failed.
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors")
    return str(errors[0]["extensions"]["code"]) if errors else None


def assert_rate_limited(body: dict[str, Any]) -> None:
    assert code(body) == "RATE_LIMITED", body
    assert body["errors"][0]["extensions"]["retryAfter"] >= 1


def junk_credentials(own_token: str) -> list[dict[str, str]]:
    """What an attacker sends to get a fresh bucket per guess: made-up keys and tokens, or their own valid token."""
    return [
        {"authorization": f"ApiKey {uuid.uuid4().hex}"},
        {"authorization": f"Bearer {uuid.uuid4().hex}"},
        {"x-api-key": uuid.uuid4().hex},
        {"authorization": f"Bearer {own_token}"},
    ]


def argon2_runs(purpose: str) -> float:
    return metrics.REGISTRY.get_sample_value("lodge_password_hashes_total", {"purpose": purpose}) or 0.0


async def test_logins_from_one_address_are_limited_whatever_credential_comes_with_them(database_url: str) -> None:
    settings = sign_in_settings(rate_limit_login_address_per_minute=SLOW, rate_limit_login_address_burst=5)
    async with live_server(settings, database_url) as server:
        own = await new_user(server)  # the attacker's own account: one attempt
        credentials = junk_credentials(own)
        answers = [code(await post(server, LOGIN, {"e": unique_email(), "p": PASSWORD}, h)) for h in credentials]
        assert answers == ["UNAUTHENTICATED"] * len(credentials)

        verified, hashed = argon2_runs("verify"), argon2_runs("hash")
        assert_rate_limited(await post(server, LOGIN, {"e": unique_email(), "p": PASSWORD}, credentials[0]))
        assert_rate_limited(await post(server, LOGIN, {"e": unique_email(), "p": PASSWORD}, credentials[3]))
        registration = {"i": {"email": unique_email(), "password": PASSWORD}}
        assert_rate_limited(await post(server, REGISTER, registration, credentials[1]))
        # Refused before argon2: the attacker cannot make the server burn CPU on their guesses.
        assert (argon2_runs("verify"), argon2_runs("hash")) == (verified, hashed)


async def test_logins_for_one_email_are_limited_by_email_from_any_credential(database_url: str) -> None:
    settings = sign_in_settings(rate_limit_login_email_per_minute=SLOW, rate_limit_login_email_burst=3)
    async with live_server(settings, database_url) as server:
        email = unique_email()
        own = await new_user(server, email)  # one attempt at this email
        credentials = junk_credentials(own)
        # The same email however it is spelled: one bucket.
        wrong = [{"e": email.upper(), "p": "not the password"}, {"e": f"  {email} ", "p": "not the password either"}]
        assert [code(await post(server, LOGIN, v, h)) for v, h in zip(wrong, credentials, strict=False)] == [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
        ]
        # Over the limit even with the right password, from any credential.
        assert_rate_limited(await post(server, LOGIN, {"e": email, "p": PASSWORD}, credentials[2]))
        assert_rate_limited(await post(server, LOGIN, {"e": email.title(), "p": PASSWORD}, credentials[3]))
        # Another email from the same address has a bucket of its own.
        other = unique_email()
        assert code(await post(server, REGISTER, {"i": {"email": other, "password": PASSWORD}}, {})) is None
        assert code(await post(server, LOGIN, {"e": other, "p": PASSWORD}, credentials[0])) is None


async def test_another_email_from_the_same_address_is_limited_by_the_address(database_url: str) -> None:
    settings = sign_in_settings(
        rate_limit_login_address_per_minute=SLOW,
        rate_limit_login_address_burst=5,
        rate_limit_login_email_per_minute=SLOW,
        rate_limit_login_email_burst=2,
    )
    async with live_server(settings, database_url) as server:
        signed_up = (await server.data(REGISTER, {"i": {"email": unique_email(), "password": PASSWORD}}))["register"]
        victim, other = unique_email(), unique_email()
        for _ in range(2):
            assert code(await post(server, LOGIN, {"e": victim, "p": PASSWORD}, {})) == "UNAUTHENTICATED"
        assert_rate_limited(await post(server, LOGIN, {"e": victim, "p": PASSWORD}, {}))  # the email's bucket
        assert code(await post(server, LOGIN, {"e": other, "p": PASSWORD}, {})) == "UNAUTHENTICATED"
        assert_rate_limited(await post(server, LOGIN, {"e": other, "p": PASSWORD}, {}))  # the address's bucket

        # Nothing else is limited: reads, signed-in mutations, refresh.
        token = signed_up["accessToken"]
        assert (await server.data("{ __typename }")) == {"__typename": "Query"}
        assert (await server.data("{ me { id } }", token=token))["me"]["id"]
        assert await server.data('mutation { createProject(input: {name: "p"}) { id } }', token=token)
        refresh = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken } }"
        assert (await server.data(refresh, {"t": signed_up["refreshToken"]}))["refresh"]["accessToken"]


async def test_each_aliased_login_and_each_websocket_login_counts(database_url: str) -> None:
    settings = sign_in_settings(rate_limit_login_address_per_minute=SLOW, rate_limit_login_address_burst=2)
    async with live_server(settings, database_url) as server:
        email = unique_email()
        await new_user(server, email)
        twice = """mutation($e: String!, $p: String!) {
          a: login(email: $e, password: $p) { accessToken }
          b: login(email: $e, password: $p) { accessToken } }"""
        body = await post(server, twice, {"e": email, "p": PASSWORD}, {})
        assert_rate_limited(body)
        assert body["errors"][0]["path"] == ["b"]

    async with live_server(settings, database_url) as server:
        async with GraphQLWS.connect(server.ws_url) as ws:
            results = []
            for _ in range(3):
                await ws.subscribe(LOGIN, {"e": unique_email(), "p": PASSWORD})
                message = await ws.receive()
                results.append(message["payload"]["errors"][0]["extensions"]["code"])
                assert (await ws.receive())["type"] == "complete"
        assert results == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RATE_LIMITED"]


async def test_sign_in_buckets_are_shared_through_redis_and_hold_no_email(
    database_url: str, redis_url: str | None
) -> None:
    need(redis_url is not None, "TEST_REDIS_URL is not set")
    assert redis_url is not None
    # A fresh secret per run: bucket keys are keyed digests, so concurrent runs never share one.
    settings = sign_in_settings(
        secret_key="sign-in-" + uuid.uuid4().hex,
        broadcast_url=redis_url,
        # Not SLOW: Redis keeps a bucket until it would be full again, and this one is left behind.
        rate_limit_login_email_per_minute=0.6,
        rate_limit_login_email_burst=2,
    )
    marker = uuid.uuid4().hex
    email = f"Shared-{marker}@Example.com"
    async with live_server(settings, database_url) as first, live_server(settings, database_url) as second:
        for server in (first, second):
            assert code(await post(server, LOGIN, {"e": email, "p": PASSWORD}, {})) == "UNAUTHENTICATED"
        assert_rate_limited(await post(first, LOGIN, {"e": email.lower(), "p": PASSWORD}, {}))
    client = aioredis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter(match="lodge:rate:*", count=1000)]
    finally:
        await client.aclose()
    assert any(key.startswith("lodge:rate:signin:email:") for key in keys)
    assert not [key for key in keys if marker in key.lower() or "@" in key]


async def test_registering_a_taken_email_does_the_same_argon2_work_as_a_new_one(server: LiveServer) -> None:
    # register cannot hide a taken email (a new one gets working tokens, see README), but it must
    # not be a cheaper probe than a sign-up: both hash the password once, before the insert decides.
    email = unique_email()
    before = argon2_runs("hash")
    await new_user(server, email)
    after_new = argon2_runs("hash")
    taken = await server.gql(REGISTER, {"i": {"email": f" {email.upper()}", "password": PASSWORD}})
    assert code(taken) == "CONFLICT"
    assert (after_new - before, argon2_runs("hash") - after_new) == (1, 1)
