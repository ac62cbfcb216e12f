"""What the app is built from; `create_app` receives it, nothing imports it as a global."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.db import Database
from app.pubsub import Hub
from app.settings import Settings

if TYPE_CHECKING:
    from app.accounts.email import EmailSender
    from app.accounts.oidc import IdentityProvider
    from app.accounts.principals import Principals
    from app.api.compiled.planner import Caller
    from app.api.context import Context
    from app.api.ratelimit import RateLimiter
    from app.gateway.coalesce import Coalescer


@dataclass
class Deps:
    settings: Settings
    db: Database
    hub: Hub
    secret_key: str
    limiter: RateLimiter
    principals: Principals
    # The gateway's batches of concurrent reservations (one set per process; idle lanes hold nothing).
    lanes: Coalescer
    # Who is calling, as compiled plans bind it (app.logs.keys.compiled_caller).
    compiled_caller: Callable[[Context], Awaitable[Caller]]
    # signInWithProvider's identity provider (LODGE_OIDC_ISSUER); None: not offered.
    identity_provider: IdentityProvider | None = None
    # How Lodge sends mail (LODGE_EMAIL_SENDER); None: the console.
    email_sender: EmailSender | None = None
