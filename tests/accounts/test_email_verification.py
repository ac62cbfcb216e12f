"""Email verification through a pluggable sender: the token arrives by mail, proves the address
once, and stops working when the address changes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from app.accounts.email import EmailMessage
from app.settings import Settings
from tests.support import PASSWORD, LiveServer, live_server, new_user, unique_email


class Outbox:
    """A sender (LODGE_EMAIL_SENDER=tests.accounts.test_email_verification:OUTBOX) that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.messages.append(message)

    def token_for(self, address: str) -> str:
        body = next(m.body for m in reversed(self.messages) if m.to == address)
        found = re.search(r'verifyEmail\(token: "([^"]+)"\)', body)
        assert found, body
        return found.group(1)


OUTBOX = Outbox()
REQUEST = "mutation { requestEmailVerification }"
VERIFY = "mutation($t: String!) { verifyEmail(token: $t) { email emailVerifiedAt } }"


@pytest.fixture(scope="module")
async def mail_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    sender = f"{__name__}:OUTBOX"
    async with live_server(settings.model_copy(update={"email_sender": sender}), database_url) as live:
        yield live


async def test_a_token_sent_by_mail_verifies_the_address_once(mail_server: LiveServer) -> None:
    server = mail_server
    address = unique_email()
    token = await new_user(server, address)
    assert (await server.data("{ me { emailVerifiedAt } }", token=token))["me"]["emailVerifiedAt"] is None
    assert await server.data(REQUEST, token=token) == {"requestEmailVerification": True}
    sent = OUTBOX.token_for(address)
    verified = (await server.data(VERIFY, {"t": sent}))["verifyEmail"]
    assert verified["email"] == address and verified["emailVerifiedAt"] is not None
    assert (await server.data("{ me { emailVerifiedAt } }", token=token))["me"]["emailVerifiedAt"] is not None
    # Spent; and a verified address needs no more tokens.
    assert await server.error_code(VERIFY, {"t": sent}) == "BAD_USER_INPUT"
    assert await server.error_code(REQUEST, token=token) == "CONFLICT"


async def test_a_token_for_an_old_address_does_not_verify_the_new_one(mail_server: LiveServer) -> None:
    server = mail_server
    address = unique_email()
    token = await new_user(server, address)
    await server.data(REQUEST, token=token)
    old_token = OUTBOX.token_for(address)
    new_address = unique_email()
    change = "mutation($e: String!, $p: String!) { updateMe(input: {email: $e, currentPassword: $p}) { email } }"
    await server.data(change, {"e": new_address, "p": PASSWORD}, token=token)
    assert await server.error_code(VERIFY, {"t": old_token}) == "BAD_USER_INPUT"
    assert await server.error_code(VERIFY, {"t": "lodge_ev_made-up"}) == "BAD_USER_INPUT"
    assert await server.error_code(REQUEST) == "UNAUTHENTICATED"
    assert (await server.data("{ me { emailVerifiedAt } }", token=token))["me"]["emailVerifiedAt"] is None
