"""Per-operation dataloaders. Batch functions take keys and return results in key order.

Inside a query or mutation the loaders read through the operation's session (and so see its
uncommitted writes); for a subscription event they open one short session per batch.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, select, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.types import TypeEngine
from sqlmodel import SQLModel, col
from strawberry.dataloader import DataLoader

from app.db import Database

M = TypeVar("M", bound=SQLModel)
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class PageKey:
    """One parent's page of a nested connection: `size` rows (page size + 1) after `after`.

    Siblings in one response usually ask for the same page, so keys are batched by (size, after,
    extra) and each batch is one statement, whatever the number of parents."""

    parent: Any  # an id, or a tuple of ids for a composite parent
    size: int
    after: tuple[Any, ...] | None = None
    extra: Any = None  # filters, hashable

    @property
    def batch(self) -> tuple[int, tuple[Any, ...] | None, Any]:
        return (self.size, self.after, self.extra)


def lateral_pages(
    model: type[M],
    inner: Select[Any],
    *,
    parent_columns: Sequence[Any],
    parent_types: Sequence[TypeEngine[Any]],
    parents: Sequence[tuple[Any, ...]],
    limit: int,
    raw: bool = False,
) -> Select[Any]:
    """Up to `limit` rows of `inner` for each parent, in `inner`'s order, in one statement:
    `SELECT ... FROM unnest(parents) CROSS JOIN LATERAL (inner WHERE key = parent LIMIT n)`.
    Rows come back as (parent key columns..., model), or with `raw` as plain rows whose attributes
    are the model's columns (no ORM object is built: several times cheaper for long pages)."""
    arrays = [
        bindparam(f"parent_{i}", [p[i] for p in parents], type_=ARRAY(kind)) for i, kind in enumerate(parent_types)
    ]
    names = [f"parent_{i}" for i in range(len(arrays))]
    keys = func.unnest(*arrays).table_valued(*names).render_derived(name="parents")
    # Each page's rank in its own order, so the outer query returns every page in that order whatever
    # plan PostgreSQL picks for the join.
    rank = func.row_number().over(order_by=list(inner._order_by_clauses)).label("page_rank")
    page = (
        inner.where(*(column == keys.c[name] for column, name in zip(parent_columns, names, strict=True)))
        .add_columns(rank)
        .limit(limit)
        .lateral("page")
    )
    columns = [keys.c[name] for name in names]
    if raw:
        fields = [column for column in page.c if column.name != "page_rank"]
        return select(*columns, *fields).select_from(keys).join(page, true()).order_by(page.c.page_rank)
    return select(*columns, aliased(model, page)).select_from(keys).join(page, true()).order_by(page.c.page_rank)


def _parent(key: PageKey) -> tuple[Any, ...]:
    return key.parent if isinstance(key.parent, tuple) else (key.parent,)


async def batched_pages(
    session: AsyncSession,
    keys: Sequence[PageKey],
    *,
    model: type[SQLModel],
    inner: Callable[[PageKey], Select[Any]],
    parent_columns: Sequence[Any],
    raw: bool = False,
) -> list[list[Any]]:
    """Pages of `inner(key)` rows for each key's parent: one LATERAL statement per batch of keys.
    With `raw`, the rows are read-only records with the model's column names, not ORM objects."""
    batches: dict[Any, list[PageKey]] = defaultdict(list)
    for key in keys:
        batches[key.batch].append(key)
    found: dict[tuple[Any, tuple[Any, ...]], list[Any]] = defaultdict(list)
    width = len(parent_columns)
    for batch, members in batches.items():
        parents = list(dict.fromkeys(_parent(key) for key in members))
        statement = lateral_pages(
            model,
            inner(members[0]),
            parent_columns=parent_columns,
            parent_types=[UUID(as_uuid=True)] * width,
            parents=parents,
            limit=members[0].size,
            raw=raw,
        )
        for row in (await session.execute(statement)).all():
            found[(batch, tuple(row[:width]))].append(row if raw else row[width])
    return [found.get((key.batch, _parent(key)), []) for key in keys]


async def batched_counts(
    session: AsyncSession, keys: Sequence[PageKey], *, base: Callable[[PageKey], Select[Any]], parent_columns: list[Any]
) -> list[int]:
    """The number of `base(key)` rows of each key's parent (for `totalCount`), grouped in one statement."""
    batches: dict[Any, list[PageKey]] = defaultdict(list)
    for key in keys:
        batches[key.extra].append(key)
    found: dict[tuple[Any, tuple[Any, ...]], int] = {}
    for extra, members in batches.items():
        parents = list(dict.fromkeys(_parent(key) for key in members))
        counted = base(members[0]).where(tuple_(*parent_columns).in_(parents)).subquery()
        columns = [counted.c[c.key] for c in parent_columns]
        rows = (await session.execute(select(*columns, func.count()).group_by(*columns))).all()
        for row in rows:
            found[(extra, tuple(row[:-1]))] = row[-1]
    return [found.get((key.extra, _parent(key)), 0) for key in keys]


class Loaders:
    def __init__(self, db: Database, session: AsyncSession | None) -> None:
        self._db = db
        self._session = session
        self._by_id: dict[type[Any], DataLoader[uuid.UUID, Any]] = {}
        self._grouped: dict[tuple[type[Any], str, str | None], DataLoader[uuid.UUID, list[Any]]] = {}
        self._custom: dict[Hashable, DataLoader[Any, Any]] = {}

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

    def children(self, model: type[M], column: str, *, order: str | None = None) -> DataLoader[uuid.UUID, list[M]]:
        """Rows of `model` grouped by the foreign key `column`, by `order` (default: creation order)."""
        key = (model, column, order)
        loader = self._grouped.get(key)
        if loader is None:
            loader = DataLoader(load_fn=self._batch_children(model, column, order))
            self._grouped[key] = loader
        return loader

    def batch(
        self, fetch: Callable[[AsyncSession, Sequence[K]], Awaitable[list[V]]], *, variant: Hashable = None
    ) -> DataLoader[K, V]:
        """The request's loader whose batches `fetch` answers (results in key order). A loader is
        known by its fetch function; `variant` tells apart the loaders of a function that is made
        per argument (`memberships_of(user_id)`), named by that argument."""
        name = (getattr(fetch, "__qualname__", fetch), getattr(fetch, "__module__", None), variant)
        loader = self._custom.get(name)
        if loader is None:

            async def load(keys: Sequence[K]) -> list[V]:
                async with self._reader() as session:
                    return await fetch(session, keys)

            loader = self._custom[name] = DataLoader(load_fn=load)
        return loader

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

    def _batch_children(
        self, model: type[M], column: str, by: str | None
    ) -> Callable[[Sequence[uuid.UUID]], Awaitable[list[list[M]]]]:
        async def load(keys: Sequence[uuid.UUID]) -> list[list[M]]:
            fk = getattr(model, column)
            # Creation order; the primary key breaks ties between rows of one instant.
            first = getattr(model, by or "created_at")
            order = (first, *model.__table__.primary_key.columns)  # type: ignore[attr-defined]
            async with self._reader() as session:
                rows = (await session.execute(select(model).where(fk.in_(keys)).order_by(*order))).scalars().all()
            grouped: dict[uuid.UUID, list[M]] = defaultdict(list)
            for row in rows:
                grouped[getattr(row, column)].append(row)
            return [grouped.get(key, []) for key in keys]

        return load
