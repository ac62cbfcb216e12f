"""The comparison harness of compiled reads (issue 16): each request goes to a server with compiled
reads and to one without (`resolver_server`, tests/api/conftest.py), and the raw bodies must be
equal byte for byte (request ids aside). `compare` also says how the compiled server ran its root
fields, read from `lodge_compiled_roots_total`, so a case cannot pass by quietly falling back."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from app.observability import metrics
from tests.support import LiveServer, new_admin, new_api_key, new_project, new_user

REQUEST_ID = re.compile(rb'"requestId":"[0-9a-f]+"')
OUTCOMES = ("compiled", "hybrid", "bail_before", "bail_after")


def _outcomes() -> dict[str, float]:
    return {name: metrics.COMPILED_ROOTS.labels(name)._value.get() for name in OUTCOMES}


async def compare(
    compiled: LiveServer, resolvers: LiveServer, query: str, variables: dict[str, Any] | None, headers: dict[str, str]
) -> tuple[dict[str, Any], str | None]:
    """Both servers' answers, equal byte for byte; returns the answer and how the compiled server
    ran its root fields ("compiled", "bail_before", ... joined by "+"; None: nothing compiled)."""
    body = {"query": query, "variables": variables or {}}
    before = _outcomes()
    first = await compiled.http.post("/graphql", json=body, headers=headers)
    after = _outcomes()
    second = await resolvers.http.post("/graphql", json=body, headers=headers)
    assert first.status_code == second.status_code
    ours, theirs = REQUEST_ID.sub(b"", first.content), REQUEST_ID.sub(b"", second.content)
    assert ours == theirs, f"{query} {variables}\ncompiled:  {ours[:3000]!r}\nresolvers: {theirs[:3000]!r}"
    ran = [name for name in OUTCOMES if after[name] > before[name]]
    result: dict[str, Any] = first.json()
    return result, "+".join(ran) or None


@dataclass
class Callers:
    """The callers every comparison runs under: their request headers and user ids."""

    headers: dict[str, dict[str, str]]
    ids: dict[str, uuid.UUID]
    tokens: dict[str, str]


async def callers(server: LiveServer, writer: tuple[str, ...]) -> Callers:
    """Anonymous, an owner, another user, a holder of `writer`, `*`, an API key of the owner's,
    and a bad token."""
    tokens: dict[str, str] = {}
    ids: dict[str, uuid.UUID] = {}
    for name in ("owner", "other"):
        tokens[name] = await new_user(server)
        me = await server.data("{ me { id } }", token=tokens[name])
        ids[name] = uuid.UUID(me["me"]["id"])
    for name, permissions in (("writer", writer), ("admin", ("*",))):
        tokens[name], user_id = await new_admin(server, permissions)
        ids[name] = uuid.UUID(user_id)
    project = await new_project(server, tokens["owner"])
    _, secret = await new_api_key(server, tokens["owner"], project)
    headers = {name: {"authorization": f"Bearer {token}"} for name, token in tokens.items()}
    headers.update(anonymous={}, apikey={"authorization": f"ApiKey {secret}"})
    headers["badtoken"] = {"authorization": "Bearer not-a-token"}
    return Callers(headers=headers, ids=ids, tokens=tokens)


async def walk(
    compiled: LiveServer,
    resolvers: LiveServer,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
    root: str,
    cursor: str = "a",
) -> list[str | None]:
    """Every page of the connection at `data[root]`, forward: `endCursor` goes into the variable
    `cursor` until `hasNextPage` is false. Each page is compared; returns how each one ran."""
    outcomes: list[str | None] = []
    after = None
    while True:
        data, ran = await compare(compiled, resolvers, query, {**variables, cursor: after}, headers)
        outcomes.append(ran)
        info = data["data"][root]["pageInfo"]
        if not info["hasNextPage"]:
            return outcomes
        after = info["endCursor"]
