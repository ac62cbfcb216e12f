"""Sign-in with an identity provider's token, verified against a key set the test serves over HTTP
(as Clerk or any OIDC provider publishes its JWKS)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import jwt.utils
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from app.accounts.oidc import IdentityProvider, ProviderUnavailable
from app.settings import Settings
from tests.support import LiveServer, free_port, live_server, new_admin, new_user, unique_email

SIGN_IN = """mutation($t: String!) { signInWithProvider(token: $t) { accessToken refreshToken
  user { id email clerkId firstName emailVerifiedAt } } }"""


class KeySet:
    """RSA keys and the JWKS document that publishes some of them."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []
        self.fetches = 0

    def add(self, *, publish: bool = True) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)
        return kid

    def document(self) -> bytes:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": keys}).encode()


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[str, KeySet]]:
    keys = KeySet()
    keys.add()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            keys.fetches += 1
            body = keys.document()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}", keys
    finally:
        http.shutdown()
        http.server_close()


@pytest.fixture(scope="module")
async def oidc_server(provider: tuple[str, KeySet], settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    issuer, _ = provider
    # No cooldown between fetches for unknown key ids: a test rotates keys right after another
    # test's unknown one.
    update = {"oidc_issuer": issuer, "oidc_audience": "lodge-tests", "oidc_refresh_cooldown_seconds": 0}
    async with live_server(settings.model_copy(update=update), database_url) as live:
        yield live


def token(provider: tuple[str, KeySet], kid: str | None = None, **claims: Any) -> str:
    issuer, keys = provider
    kid = kid or keys.published[0]
    now = int(time.time())
    body = {"iss": issuer, "aud": "lodge-tests", "iat": now, "exp": now + 300, "sub": f"user_{uuid.uuid4().hex}"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, keys.keys[kid], "RS256", headers={"kid": kid})


async def test_a_new_subject_becomes_a_user_and_signs_in_again_as_them(
    oidc_server: LiveServer, provider: tuple[str, KeySet]
) -> None:
    email = unique_email()
    subject = f"user_{uuid.uuid4().hex}"
    first = (
        await oidc_server.data(
            SIGN_IN, {"t": token(provider, sub=subject, email=email, email_verified=True, given_name="Ada")}
        )
    )["signInWithProvider"]
    assert first["user"]["clerkId"] == subject and first["user"]["email"] == email
    assert first["user"]["firstName"] == "Ada" and first["user"]["emailVerifiedAt"] is not None
    again = (await oidc_server.data(SIGN_IN, {"t": token(provider, sub=subject)}))["signInWithProvider"]
    assert again["user"]["id"] == first["user"]["id"]
    # The tokens Lodge issued work like a password login's.
    me = await oidc_server.data("{ me { id clerkId } }", token=again["accessToken"])
    assert me["me"] == {"id": first["user"]["id"], "clerkId": subject}
    refreshed = await oidc_server.data(
        "mutation($r: String!) { refresh(refreshToken: $r) { user { id } } }", {"r": again["refreshToken"]}
    )
    assert refreshed["refresh"]["user"]["id"] == first["user"]["id"]


async def test_a_verified_email_links_the_existing_account(
    oidc_server: LiveServer, provider: tuple[str, KeySet]
) -> None:
    email = unique_email()
    password_user = await new_user(oidc_server, email)
    user_id = (await oidc_server.data("{ me { id } }", token=password_user))["me"]["id"]
    # Anyone may register any address: until Lodge has seen it proven, the provider's user is not
    # signed into that account (it would be a takeover by whoever registered it).
    proven_elsewhere = token(provider, email=email, email_verified=True)
    assert await oidc_server.error_code(SIGN_IN, {"t": proven_elsewhere}) == "CONFLICT"
    async with oidc_server.deps.db.session() as session:  # as verifyEmail does
        await session.execute(text("UPDATE users SET email_verified_at = now() WHERE id = :u"), {"u": user_id})
        await session.commit()
    linked = await oidc_server.data(SIGN_IN, {"t": token(provider, email=email, email_verified=True)})
    assert linked["signInWithProvider"]["user"]["id"] == user_id
    # An email the provider has not verified links nothing: a new account, without that email.
    other = unique_email()
    owner = await new_user(oidc_server, other)
    owner_id = (await oidc_server.data("{ me { id } }", token=owner))["me"]["id"]
    unverified = (await oidc_server.data(SIGN_IN, {"t": token(provider, email=other, email_verified=False)}))[
        "signInWithProvider"
    ]["user"]
    assert unverified["id"] != owner_id and unverified["email"] is None
    # A verified email of an account already linked to another identity is a conflict.
    assert await oidc_server.error_code(SIGN_IN, {"t": token(provider, email=email, email_verified=True)}) == "CONFLICT"


async def test_tokens_that_do_not_verify_are_refused(oidc_server: LiveServer, provider: tuple[str, KeySet]) -> None:
    issuer, keys = provider
    unpublished = keys.add(publish=False)
    now = int(time.time())
    bad = {
        "expired": token(provider, iat=now - 900, exp=now - 600),
        "another issuer": token(provider, iss="https://evil.example"),
        "another audience": token(provider, aud="someone-else"),
        "an unknown key": token(provider, kid=unpublished),
        "no subject": token(provider, sub=None),
        "garbage": "not.a.jwt",
    }
    forged = token(provider)
    head, payload, _ = forged.split(".")
    other_signature = token(provider, kid=unpublished).split(".")[2]
    bad["a forged signature"] = f"{head}.{payload}.{other_signature}"
    # The header names another algorithm than the provider's key (an RSA key read as EC).
    head_es = jwt.utils.base64url_encode(json.dumps({"alg": "ES256", "kid": keys.published[0], "typ": "JWT"}).encode())
    bad["algorithm and key disagree"] = f"{head_es.decode()}.{payload}.{other_signature}"
    bad["alg none"] = jwt.encode(
        {"iss": issuer, "sub": "x", "aud": "lodge-tests", "iat": now, "exp": now + 60}, "", "none"
    )
    for reason, value in bad.items():
        assert await oidc_server.error_code(SIGN_IN, {"t": value}) == "UNAUTHENTICATED", reason
    assert await oidc_server.error_code(SIGN_IN, {"t": "x" * 20_000}) == "BAD_USER_INPUT"


async def test_a_rotated_key_is_fetched_and_a_suspended_user_stays_out(
    oidc_server: LiveServer, provider: tuple[str, KeySet]
) -> None:
    _, keys = provider
    subject = f"user_{uuid.uuid4().hex}"
    user = (await oidc_server.data(SIGN_IN, {"t": token(provider, sub=subject)}))["signInWithProvider"]["user"]
    rotated = keys.add()
    fetches = keys.fetches
    assert (await oidc_server.data(SIGN_IN, {"t": token(provider, kid=rotated, sub=subject)}))["signInWithProvider"][
        "user"
    ]["id"] == user["id"]
    assert keys.fetches == fetches + 1

    admin, _ = await new_admin(oidc_server, ("users:admin",))
    await oidc_server.data(
        "mutation($id: ID!) { deactivateUser(id: $id) { isActive } }", {"id": user["id"]}, token=admin
    )
    assert await oidc_server.error_code(SIGN_IN, {"t": token(provider, sub=subject)}) == "UNAUTHENTICATED"


async def test_without_a_provider_the_mutation_is_refused(server: LiveServer, provider: tuple[str, KeySet]) -> None:
    assert await server.error_code(SIGN_IN, {"t": token(provider)}) == "BAD_USER_INPUT"


async def test_a_provider_that_cannot_be_reached_is_retryable(provider: tuple[str, KeySet]) -> None:
    issuer, _ = provider
    closed = IdentityProvider(issuer=issuer, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", audience=None)
    with pytest.raises(ProviderUnavailable) as raised:
        await closed.verify(token(provider))
    assert raised.value.extensions["retryable"] is True
