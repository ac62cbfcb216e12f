"""Per-operation dataloaders. Batch functions take keys and return results in key order.

Inside a query or mutation the loaders read through the operation's session (and so see its
uncommitted writes); for a subscription event they open one short session per batch.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col
from strawberry.dataloader import DataLoader

from app.db import Database

M = TypeVar("M", bound=SQLModel)


class Loaders:
    def __init__(self, db: Database, session: AsyncSession | None) -> None:
        self._db = db
        self._session = session
        self._by_id: dict[type[Any], DataLoader[uuid.UUID, Any]] = {}
        self._grouped: dict[tuple[type[Any], str], DataLoader[uuid.UUID, list[Any]]] = {}
        self._custom: dict[str, DataLoader[uuid.UUID, list[Any]]] = {}

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[AsyncSession]:
        if self._session is not None:
            yield self._session
        else:
            async with self._db.session() as session:
                yield session

    def by_id(self, model: type[M]) -> DataLoader[uuid.UUID, M | None]:
        loader = self._by_id.get(model)
        if loader is None:
            loader = DataLoader(load_fn=self._batch_by_id(model))
            self._by_id[model] = loader
        return loader

    def children(self, model: type[M], column: str) -> DataLoader[uuid.UUID, list[M]]:
        """Rows of `model` grouped by the foreign key `column`, in creation order."""
        key = (model, column)
        loader = self._grouped.get(key)
        if loader is None:
            loader = DataLoader(load_fn=self._batch_children(model, column))
            self._grouped[key] = loader
        return loader

    def roles_of_user(self) -> DataLoader[uuid.UUID, list[Any]]:
        from app.accounts import models

        return self.through(models.UserRole, "user_id", "role_id", models.Role, order="name")

    def services_of_project(self) -> DataLoader[uuid.UUID, list[Any]]:
        from app.gateway import models

        return self.through(models.ProjectService, "project_id", "service_id", models.Service, order="name")

    def through(
        self, link: type[SQLModel], key: str, target_key: str, target: type[M], *, order: str
    ) -> DataLoader[uuid.UUID, list[M]]:
        """Rows of `target` reached through the link table `link` (`link.key` -> `link.target_key`)."""
        name = f"{link.__name__}.{key}->{target.__name__}"
        loader = self._custom.get(name)
        if loader is None:

            async def load(keys: Sequence[uuid.UUID]) -> list[list[M]]:
                link_key = col(getattr(link, key))
                query = (
                    select(link_key, target)
                    .join(target, col(target.id) == col(getattr(link, target_key)))  # type: ignore[attr-defined]
                    .where(link_key.in_(keys))
                    .order_by(col(getattr(target, order)))
                )
                async with self._reader() as session:
                    rows = (await session.execute(query)).all()
                grouped: dict[uuid.UUID, list[M]] = defaultdict(list)
                for owner, row in rows:
                    grouped[owner].append(row)
                return [grouped.get(k, []) for k in keys]

            loader = self._custom[name] = DataLoader(load_fn=load)
        return loader

    def _batch_by_id(self, model: type[M]) -> Callable[[Sequence[uuid.UUID]], Awaitable[list[M | None]]]:
        async def load(keys: Sequence[uuid.UUID]) -> list[M | None]:
            table_id = model.id  # type: ignore[attr-defined]
            async with self._reader() as session:
                rows = (await session.execute(select(model).where(table_id.in_(keys)))).scalars().all()
            found = {row.id: row for row in rows}  # type: ignore[attr-defined]
            return [found.get(key) for key in keys]

        return load

    def _batch_children(self, model: type[M], column: str) -> Callable[[Sequence[uuid.UUID]], Awaitable[list[list[M]]]]:
        async def load(keys: Sequence[uuid.UUID]) -> list[list[M]]:
            fk = getattr(model, column)
            # Creation order; the primary key breaks ties between rows of one instant.
            order = (model.created_at, *model.__table__.primary_key.columns)  # type: ignore[attr-defined]
            async with self._reader() as session:
                rows = (await session.execute(select(model).where(fk.in_(keys)).order_by(*order))).scalars().all()
            grouped: dict[uuid.UUID, list[M]] = defaultdict(list)
            for row in rows:
                grouped[getattr(row, column)].append(row)
            return [grouped.get(key, []) for key in keys]

        return load
