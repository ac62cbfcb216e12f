"""What deleting a user does to what they own (deleteUser), in the deletion's transaction.

The user row is soft-deleted (accounts.service.soft_delete_user); their rows stay, for the audit
trail and for an admin, but stop acting for them in public:
- the API keys of their projects are revoked (each stops at once: the caller announces them);
- their vendors are hidden from public lists (`vendors`, `vendorsNear`);
- their active billing subscriptions are cancelled;
- their live workflows are soft-deleted, so public ones are no longer read or run by anyone.
One statement each, by the owner's id; nothing here is undone if the user comes back (a Discord
or Clerk upsert), which is documented.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_REVOKE_KEYS = text(
    """
    UPDATE api_keys SET revoked_at = now()
    WHERE revoked_at IS NULL AND project_id IN (SELECT id FROM projects WHERE owner_id = :user_id)
    RETURNING id
    """
)
_HIDE_VENDORS = text("UPDATE vendors SET hidden_at = now() WHERE user_id = :user_id AND hidden_at IS NULL")
_CANCEL_SUBSCRIPTIONS = text(
    "UPDATE subscriptions SET status = 'cancelled' WHERE user_id = :user_id AND status = 'active'"
)
_HIDE_WORKFLOWS = text("UPDATE workflows SET deleted_at = now() WHERE user_id = :user_id AND deleted_at IS NULL")


@dataclass(frozen=True)
class Retired:
    api_key_ids: list[uuid.UUID]
    vendors: int
    subscriptions: int
    workflows: int


async def retire_owned(session: AsyncSession, *, user_id: uuid.UUID) -> Retired:
    params = {"user_id": user_id}
    keys = list((await session.scalars(_REVOKE_KEYS, params)).all())
    counts = [
        int(getattr(await session.execute(statement, params), "rowcount", 0) or 0)
        for statement in (_HIDE_VENDORS, _CANCEL_SUBSCRIPTIONS, _HIDE_WORKFLOWS)
    ]
    return Retired(api_key_ids=keys, vendors=counts[0], subscriptions=counts[1], workflows=counts[2])
