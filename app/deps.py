"""What the app is built from; `create_app` receives it, nothing imports it as a global."""

from __future__ import annotations

from dataclasses import dataclass

from app.db import Database
from app.pubsub import Hub
from app.settings import Settings


@dataclass
class Deps:
    settings: Settings
    db: Database
    hub: Hub
    secret_key: str
