"""Roles and the permission strings they carry. Functions flush; the caller owns the transaction."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts import models
from app.api.errors import BadUserInput, Conflict, NotFound

SUPERUSER = "*"
# domain:verb, e.g. gateway:admin, users:admin, audit:read, workflows:write
_PERMISSION = re.compile(r"^[a-z][a-z_]*:[a-z][a-z_]*$")


def check_permissions(permissions: Sequence[str]) -> list[str]:
    out = []
    for permission in permissions:
        if permission != SUPERUSER and not _PERMISSION.match(permission):
            raise BadUserInput(f"{permission!r} is not a permission (domain:verb, or *)", field="permissions")
        if permission not in out:
            out.append(permission)
    return out


async def create_role(
    session: AsyncSession, *, name: str, description: str | None, permissions: Sequence[str]
) -> models.Role:
    if not name.strip():
        raise BadUserInput("name must not be empty", field="name")
    statement = (
        insert(models.Role)
        .values(name=name.strip(), description=description, permissions=check_permissions(permissions))
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(col(models.Role.id))
    )
    role_id = await session.scalar(statement)
    if role_id is None:
        raise Conflict("a role with this name already exists", field="name")
    return await get_role_or_raise(session, role_id=role_id)


async def update_role(
    session: AsyncSession,
    *,
    role: models.Role,
    name: str | None,
    description: str | None,
    permissions: Sequence[str] | None,
) -> models.Role:
    """Only what is given changes (a null description is left as it is)."""
    values: dict[str, object] = {}
    if name is not None:
        if not name.strip():
            raise BadUserInput("name must not be empty", field="name")
        values["name"] = name.strip()
    if description is not None:
        values["description"] = description
    if permissions is not None:
        values["permissions"] = check_permissions(permissions)
    if values:
        try:
            async with session.begin_nested():
                await session.execute(update(models.Role).where(col(models.Role.id) == role.id).values(**values))
        except IntegrityError:
            raise Conflict("a role with this name already exists", field="name") from None
    await session.refresh(role)
    return role


async def holders_of(session: AsyncSession, *, role_id: uuid.UUID) -> list[uuid.UUID]:
    query = select(col(models.UserRole.user_id)).where(col(models.UserRole.role_id) == role_id)
    return list((await session.execute(query)).scalars().all())


async def delete_role(session: AsyncSession, *, role_id: uuid.UUID) -> None:
    """The role and its assignments (ON DELETE CASCADE)."""
    await session.execute(delete(models.Role).where(col(models.Role.id) == role_id))


async def get_role_or_raise(session: AsyncSession, *, role_id: uuid.UUID) -> models.Role:
    role = await session.get(models.Role, role_id)
    if role is None:
        raise NotFound("role not found", id=str(role_id))
    return role


async def list_roles(session: AsyncSession) -> Sequence[models.Role]:
    return (await session.execute(select(models.Role).order_by(col(models.Role.name)))).scalars().all()


async def assign_role(
    session: AsyncSession, *, user_id: uuid.UUID, role_id: uuid.UUID, assigned_by: uuid.UUID | None
) -> None:
    await get_role_or_raise(session, role_id=role_id)
    await session.execute(
        insert(models.UserRole)
        .values(user_id=user_id, role_id=role_id, assigned_by=assigned_by)
        .on_conflict_do_nothing(index_elements=["user_id", "role_id"])
    )


async def revoke_role(session: AsyncSession, *, user_id: uuid.UUID, role_id: uuid.UUID) -> None:
    await get_role_or_raise(session, role_id=role_id)
    await session.execute(
        models.UserRole.__table__.delete().where(  # type: ignore[attr-defined]
            models.UserRole.__table__.c.user_id == user_id,  # type: ignore[attr-defined]
            models.UserRole.__table__.c.role_id == role_id,  # type: ignore[attr-defined]
        )
    )


_PERMISSIONS_OF = text(
    """
    SELECT DISTINCT jsonb_array_elements_text(r.permissions)
    FROM user_roles ur JOIN roles r ON r.id = ur.role_id
    WHERE ur.user_id = :user_id
    """
)


async def permissions_of(session: AsyncSession, *, user_id: uuid.UUID) -> frozenset[str]:
    return frozenset((await session.execute(_PERMISSIONS_OF, {"user_id": user_id})).scalars().all())


async def ensure_superuser_role(session: AsyncSession) -> models.Role:
    """The `admin` role with `*`, created on first use (`lodge create-user --admin`)."""
    await session.execute(
        insert(models.Role)
        .values(name="admin", description="Can do anything", permissions=[SUPERUSER])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    role = (await session.execute(select(models.Role).where(col(models.Role.name) == "admin"))).scalars().one()
    return role


async def assignments_of_users(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> list[list[tuple[models.UserRole, models.Role]]]:
    """Each user's role assignments with their roles, by role name, in one statement (a dataloader batch)."""
    link, role = models.UserRole, models.Role
    rows = (
        await session.execute(
            select(link, role)
            .join(role, col(role.id) == col(link.role_id))
            .where(col(link.user_id).in_(user_ids))
            .order_by(col(role.name))
        )
    ).all()
    by_user: dict[uuid.UUID, list[tuple[models.UserRole, models.Role]]] = {user_id: [] for user_id in user_ids}
    for assignment, assigned in rows:
        by_user[assignment.user_id].append((assignment, assigned))
    return [by_user[user_id] for user_id in user_ids]
