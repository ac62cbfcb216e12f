from __future__ import annotations

from tests.support import PASSWORD, LiveServer, new_user, unique_email

ME = "{ me { id email name lastLoginAt } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken expiresAt user { email } } }"


async def test_register_login_me(server: LiveServer) -> None:
    email = unique_email()
    token = await new_user(server, email)
    me = (await server.data(ME, token=token))["me"]
    assert me["email"] == email and me["name"] == "Test"

    login = (await server.data(LOGIN, {"e": email.upper(), "p": PASSWORD}))["login"]
    assert login["user"]["email"] == email
    me = (await server.data(ME, token=login["accessToken"]))["me"]
    assert me["lastLoginAt"] is not None


async def test_anonymous_me_is_null(server: LiveServer) -> None:
    assert (await server.data(ME))["me"] is None


async def test_wrong_password_and_unknown_email_look_the_same(server: LiveServer) -> None:
    email = unique_email()
    await new_user(server, email)
    wrong = await server.gql(LOGIN, {"e": email, "p": "not the password at all"})
    unknown = await server.gql(LOGIN, {"e": unique_email(), "p": PASSWORD})
    assert wrong["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert wrong["errors"][0]["message"] == unknown["errors"][0]["message"]


async def test_registration_bad_input(server: LiveServer) -> None:
    register = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }"
    weak = await server.error_code(register, {"input": {"email": unique_email(), "password": "short"}})
    malformed = await server.error_code(register, {"input": {"email": "not-an-email", "password": PASSWORD}})
    email = unique_email()
    await new_user(server, email)
    duplicate = await server.error_code(register, {"input": {"email": email.upper(), "password": PASSWORD}})
    # CONFLICT on purpose: a sign-up answers with working tokens, so no answer to a taken email can
    # pass for one (README, Sign-up and sign-in). What keeps it from being a cheap probe is tested in
    # test_sign_in_limits: the same argon2 work as a sign-up, and the per-address sign-in limit.
    assert (weak, malformed, duplicate) == ("BAD_USER_INPUT", "BAD_USER_INPUT", "CONFLICT")


async def test_garbage_token_is_unauthenticated(server: LiveServer) -> None:
    assert await server.error_code(ME, token="not-a-jwt") == "UNAUTHENTICATED"
