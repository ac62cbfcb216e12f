"""Club analyses with their images and metrics. Functions flush; the caller owns the transaction.

An analysis and all its images and metrics are checked before anything is written and inserted in
the operation's transaction, so a bad metric leaves no analysis and no image behind.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, NotFound
from app.api.scalars import parse_datetime
from app.api.validation import MAX_TEXT, bounded_text, like_pattern, required_text
from app.communities import models

MAX_IMAGES = 50
MAX_METRICS = 500
MAX_URL = 2048


class AnalysisOrder(enum.Enum):
    NEWEST = "NEWEST"
    OLDEST = "OLDEST"
    MOST_CONFIDENT = "MOST_CONFIDENT"
    LEAST_CONFIDENT = "LEAST_CONFIDENT"


@dataclass(frozen=True)
class ImageSpec:
    image_url: str
    original_name: str | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class MetricSpec:
    name: str
    value: float
    unit: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class AnalysisFilter:
    guild_ids: Sequence[uuid.UUID] | None = None  # None: any guild
    member_id: uuid.UUID | None = None  # only guilds this user belongs to
    user_id: uuid.UUID | None = None
    min_confidence: float | None = None
    search: str | None = None


def confidence(value: float, field: str = "confidence") -> float:
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise BadUserInput(f"{field} must be between 0 and 1", field=field)
    return value


def _images(images: Sequence[ImageSpec]) -> list[dict[str, Any]]:
    if len(images) > MAX_IMAGES:
        raise BadUserInput(f"an analysis holds at most {MAX_IMAGES} images", field="images")
    rows = []
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if image.file_size is not None and image.file_size < 0:
            raise BadUserInput(f"{where}.fileSize must not be negative", field=f"{where}.fileSize")
        rows.append(
            {
                "image_url": required_text(image.image_url, f"{where}.imageUrl", limit=MAX_URL),
                "original_name": bounded_text(image.original_name, f"{where}.originalName"),
                "file_size": image.file_size,
            }
        )
    return rows


def _metrics(metrics: Sequence[MetricSpec]) -> list[dict[str, Any]]:
    if len(metrics) > MAX_METRICS:
        raise BadUserInput(f"an analysis holds at most {MAX_METRICS} metrics", field="metrics")
    rows = []
    for index, metric in enumerate(metrics):
        where = f"metrics[{index}]"
        if not math.isfinite(metric.value):
            raise BadUserInput(f"{where}.value must be a finite number", field=f"{where}.value")
        rows.append(
            {
                "name": required_text(metric.name, f"{where}.name"),
                "value": metric.value,
                "unit": bounded_text(metric.unit, f"{where}.unit"),
                "category": bounded_text(metric.category, f"{where}.category"),
            }
        )
    return rows


async def create_analysis(
    session: AsyncSession,
    *,
    guild_id: uuid.UUID,
    user_id: uuid.UUID,
    title: str | None,
    summary: str,
    confidence_: float,
    images: Sequence[ImageSpec],
    metrics: Sequence[MetricSpec],
) -> models.ClubAnalysis:
    analysis = models.ClubAnalysis(
        guild_id=guild_id,
        user_id=user_id,
        title=bounded_text(title, "title"),
        summary=required_text(summary, "summary", limit=MAX_TEXT),
        confidence=confidence(confidence_),
    )
    image_rows, metric_rows = _images(images), _metrics(metrics)  # all checked before any write
    session.add(analysis)
    await session.flush()
    await session.refresh(analysis)
    if image_rows:
        await session.execute(
            insert(models.ClubAnalysisImage),
            [{**row, "analysis_id": analysis.id, "position": i} for i, row in enumerate(image_rows)],
        )
    if metric_rows:
        await session.execute(
            insert(models.ClubMetric),
            [{**row, "analysis_id": analysis.id, "position": i} for i, row in enumerate(metric_rows)],
        )
    return analysis


async def get_analysis_or_raise(session: AsyncSession, *, analysis_id: uuid.UUID) -> models.ClubAnalysis:
    """Locked until commit: a concurrent update or delete of the same analysis waits its turn."""
    query = select(models.ClubAnalysis).where(col(models.ClubAnalysis.id) == analysis_id).with_for_update()
    analysis = (await session.scalars(query.execution_options(populate_existing=True))).first()
    if analysis is None:
        raise NotFound("club analysis not found", id=str(analysis_id))
    return analysis


async def update_analysis(
    session: AsyncSession, *, analysis: models.ClubAnalysis, changes: dict[str, Any]
) -> models.ClubAnalysis:
    if "summary" in changes:
        analysis.summary = required_text(changes["summary"], "summary", limit=MAX_TEXT)
    if "title" in changes:
        analysis.title = bounded_text(changes["title"], "title")
    if "confidence" in changes:
        if changes["confidence"] is None:
            raise BadUserInput("confidence must not be null", field="confidence")
        analysis.confidence = confidence(changes["confidence"])
    session.add(analysis)
    await session.flush()
    await session.refresh(analysis)
    return analysis


async def delete_analysis(session: AsyncSession, *, analysis: models.ClubAnalysis) -> None:
    await session.delete(analysis)
    await session.flush()


def _order(order: AnalysisOrder) -> tuple[list[Any], bool]:
    """The sort key columns and whether they descend."""
    a = models.ClubAnalysis
    if order in (AnalysisOrder.NEWEST, AnalysisOrder.OLDEST):
        return [col(a.created_at), col(a.id)], order is AnalysisOrder.NEWEST
    return [col(a.confidence), col(a.created_at), col(a.id)], order is AnalysisOrder.MOST_CONFIDENT


def sort_key(row: models.ClubAnalysis, order: AnalysisOrder) -> list[Any]:
    if order in (AnalysisOrder.NEWEST, AnalysisOrder.OLDEST):
        return [row.created_at, row.id]
    return [row.confidence, row.created_at, row.id]


def filtered(spec: AnalysisFilter) -> Any:
    a = models.ClubAnalysis
    query = select(a)
    if spec.guild_ids is not None:
        query = query.where(col(a.guild_id).in_(spec.guild_ids))
    if spec.member_id is not None:
        joined = select(col(models.UserGuild.guild_id)).where(col(models.UserGuild.user_id) == spec.member_id)
        query = query.where(col(a.guild_id).in_(joined))
    if spec.user_id is not None:
        query = query.where(col(a.user_id) == spec.user_id)
    if spec.min_confidence is not None:
        query = query.where(col(a.confidence) >= confidence(spec.min_confidence, "minConfidence"))
    if spec.search:
        # Two trigram GIN indexes, combined by a BitmapOr.
        pattern = like_pattern(spec.search)
        query = query.where(or_(col(a.title).ilike(pattern), col(a.summary).ilike(pattern)))
    return query


def list_query(spec: AnalysisFilter, *, order: AnalysisOrder, after: Sequence[Any] | None, limit: int) -> Any:
    columns, descending = _order(order)
    query = filtered(spec)
    if after is not None:
        position = tuple_(*columns)
        query = query.where(position < tuple_(*after) if descending else position > tuple_(*after))
    return query.order_by(*(c.desc() if descending else c.asc() for c in columns)).limit(limit + 1)


async def list_analyses(
    session: AsyncSession,
    *,
    spec: AnalysisFilter,
    order: AnalysisOrder,
    after: Sequence[Any] | None,
    limit: int,
    count: bool,
) -> tuple[Sequence[models.ClubAnalysis], int]:
    rows = (await session.scalars(list_query(spec, order=order, after=after, limit=limit))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(filtered(spec).subquery())) or 0
    return rows, total


def cursor_values(order: AnalysisOrder, values: list[Any]) -> list[Any]:
    """A decoded cursor's JSON values back to the sort key's types."""
    try:
        if order in (AnalysisOrder.NEWEST, AnalysisOrder.OLDEST):
            stamp, key = values
            return [parse_datetime(stamp), uuid.UUID(key)]
        value, stamp, key = values
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(value)
        return [float(value), parse_datetime(stamp), uuid.UUID(key)]
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise BadUserInput("malformed cursor") from None
