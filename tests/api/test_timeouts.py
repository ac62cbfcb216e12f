"""A statement running past LODGE_STATEMENT_TIMEOUT_MS is cancelled in PostgreSQL and answered."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import make_settings
from tests.support import live_server, new_user

CREATE = 'mutation { createVendor(input: {name: "Slow"}) { id } }'
UPDATE = "mutation($id: ID!, $n: String!) { updateVendor(id: $id, input: {name: $n}) { name } }"


async def test_a_slow_statement_is_cancelled_and_the_connection_returns(database_url: str) -> None:
    async with live_server(make_settings(statement_timeout_ms=300), database_url) as server:
        token = await new_user(server)
        vendor_id = (await server.data(CREATE, token=token))["createVendor"]["id"]
        pool = server.deps.db.engine.sync_engine.pool
        # Another transaction holds the vendor's row: the update waits on it, past the timeout.
        async with server.deps.db.engine.connect() as blocker:
            await blocker.execute(text("SELECT 1 FROM vendors WHERE id = :id FOR UPDATE"), {"id": vendor_id})
            # Answered, not hung: the client's own timeout (20 s) would fail the test first.
            body = await server.gql(UPDATE, {"id": vendor_id, "n": "Blocked"}, token=token)
            await blocker.rollback()
        error = body["errors"][0]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "reason": "statement_timeout"}
        assert body.get("data") is None
        # Nothing was saved, the server is healthy and the connection went back to the pool.
        assert (await server.data(UPDATE, {"id": vendor_id, "n": "Fine"}, token=token))["updateVendor"] == {
            "name": "Fine"
        }
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        assert (await server.http.get("/readyz")).status_code == 200
