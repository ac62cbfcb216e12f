"""Workflows, their graphs and their versions. Functions flush; the caller owns the transaction.

Every change to a workflow's graph and every publish first locks the workflow's row
(`SELECT ... FOR UPDATE`), so edits of one workflow are serialised: a cycle check cannot race
another edge, and a publish snapshots a graph nobody is changing. Concurrent publishes queue on
that lock and take consecutive version numbers.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, Conflict, NotFound
from app.api.validation import MAX_DESCRIPTION, bounded_text, json_object, like_pattern, required_text
from app.workflows import models

MAX_NODES = 1000
MAX_EDGES = 5000
MAX_TAGS = 50
MAX_KEY = 100
MAX_LABEL = 255  # a workflow's name, a node's label
MAX_POSITION = 1e38  # a REAL column holds about ±3.4e38
MIN_POSITION = 1e-37  # and nothing nonzero below about 1.2e-38


@dataclass(frozen=True)
class WorkflowFilter:
    status: str | None = None
    tag: str | None = None
    search: str | None = None
    is_template: bool | None = None
    is_public: bool | None = None
    owner_id: uuid.UUID | None = None
    visible_to: uuid.UUID | None = None  # None: every workflow (workflows:write)


def clean_tags(tags: Sequence[str] | None) -> list[str]:
    cleaned: list[str] = []
    for tag in tags or []:
        value = required_text(tag, "tags", limit=MAX_KEY)
        if value not in cleaned:
            cleaned.append(value)
    if len(cleaned) > MAX_TAGS:
        raise BadUserInput(f"a workflow has at most {MAX_TAGS} tags", field="tags")
    return cleaned


def key(value: str, field: str = "key") -> str:
    return required_text(value, field, limit=MAX_KEY)


async def create_workflow(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    name: str,
    description: str | None,
    tags: Sequence[str] | None,
    configuration: Any,
    is_template: bool,
    is_public: bool,
) -> models.Workflow:
    workflow = models.Workflow(
        user_id=owner_id,
        name=required_text(name, "name", limit=MAX_LABEL),
        description=bounded_text(description, "description", limit=MAX_DESCRIPTION),
        tags=clean_tags(tags),
        configuration=json_object(configuration if configuration is not None else {}, "configuration"),
        is_template=is_template,
        is_public=is_public,
    )
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    return workflow


async def get_workflow_or_raise(
    session: AsyncSession, *, workflow_id: uuid.UUID, lock: bool = False, deleted: bool = False
) -> models.Workflow:
    """A live workflow (or, with `deleted`, a soft-deleted one); `lock` takes its row lock."""
    query = select(models.Workflow).where(col(models.Workflow.id) == workflow_id)
    query = query.where(
        col(models.Workflow.deleted_at).is_not(None) if deleted else col(models.Workflow.deleted_at).is_(None)
    )
    if lock:
        query = query.with_for_update()
    workflow = (await session.scalars(query.execution_options(populate_existing=True))).first()
    if workflow is None:
        raise NotFound("workflow not found", id=str(workflow_id))
    return workflow


async def update_workflow(
    session: AsyncSession, *, workflow: models.Workflow, changes: dict[str, Any]
) -> models.Workflow:
    if "name" in changes:
        workflow.name = required_text(changes["name"], "name", limit=MAX_LABEL)
    if "description" in changes:
        workflow.description = bounded_text(changes["description"], "description", limit=MAX_DESCRIPTION)
    if "tags" in changes:
        workflow.tags = clean_tags(changes["tags"])
    if "configuration" in changes:
        workflow.configuration = json_object(changes["configuration"] or {}, "configuration")
    for flag in ("is_template", "is_public"):
        if flag in changes:
            if changes[flag] is None:
                raise BadUserInput(f"{flag} must not be null", field=flag)
            setattr(workflow, flag, changes[flag])
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    return workflow


async def set_deleted(session: AsyncSession, *, workflow: models.Workflow, deleted: bool) -> models.Workflow:
    workflow.deleted_at = func.now() if deleted else None  # type: ignore[assignment]
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    return workflow


async def archive_workflow(session: AsyncSession, *, workflow: models.Workflow) -> models.Workflow:
    workflow.status = "archived"
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    return workflow


def filtered(spec: WorkflowFilter) -> Any:
    w = models.Workflow
    query = select(w).where(col(w.deleted_at).is_(None))
    if spec.visible_to is not None:
        query = query.where(or_(col(w.user_id) == spec.visible_to, col(w.is_public).is_(True)))
    if spec.status is not None:
        query = query.where(col(w.status) == spec.status)
    if spec.tag is not None:
        query = query.where(col(w.tags).contains([spec.tag]))  # tags @> ARRAY[tag]: the GIN index
    if spec.search:
        pattern = like_pattern(spec.search)
        query = query.where(or_(col(w.name).ilike(pattern), col(w.description).ilike(pattern)))
    if spec.is_template is not None:
        query = query.where(col(w.is_template).is_(spec.is_template))
    if spec.is_public is not None:
        query = query.where(col(w.is_public).is_(spec.is_public))
    if spec.owner_id is not None:
        query = query.where(col(w.user_id) == spec.owner_id)
    return query


def list_query(spec: WorkflowFilter, *, before: tuple[datetime, uuid.UUID] | None, limit: int) -> Any:
    """Newest first."""
    w = models.Workflow
    query = filtered(spec)
    if before is not None:
        query = query.where(tuple_(col(w.created_at), col(w.id)) < tuple_(*before))
    return query.order_by(col(w.created_at).desc(), col(w.id).desc()).limit(limit + 1)


async def list_workflows(
    session: AsyncSession, *, spec: WorkflowFilter, before: tuple[datetime, uuid.UUID] | None, limit: int, count: bool
) -> tuple[Sequence[models.Workflow], int]:
    rows = (await session.scalars(list_query(spec, before=before, limit=limit))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(filtered(spec).subquery())) or 0
    return rows, total


# -- the graph -----------------------------------------------------------------------------------


def _node_values(values: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    if "node_type" in values:
        checked["node_type"] = required_text(values["node_type"], "type", limit=MAX_KEY)
    if "label" in values:
        checked["label"] = bounded_text(values["label"], "label", limit=MAX_LABEL)
    for axis, name in (("position_x", "positionX"), ("position_y", "positionY")):
        if axis in values:
            value = values[axis]
            if value is not None and not (math.isfinite(value) and abs(value) <= MAX_POSITION):
                raise BadUserInput(f"{name} must be a number within ±{MAX_POSITION:g}", field=name)
            if value is not None and abs(value) < MIN_POSITION:
                value = 0.0  # below what a REAL column holds (PostgreSQL refuses the underflow): no distance
            checked[axis] = value
    if "configuration" in values:
        checked["configuration"] = json_object(values["configuration"] or {}, "configuration")
    return checked


async def add_node(session: AsyncSession, *, workflow: models.Workflow, values: dict[str, Any]) -> models.WorkflowNode:
    await get_workflow_or_raise(session, workflow_id=workflow.id, lock=True)
    count = await session.scalar(select(func.count()).where(col(models.WorkflowNode.workflow_id) == workflow.id))
    if (count or 0) >= MAX_NODES:
        raise BadUserInput(f"a workflow has at most {MAX_NODES} nodes")
    node = models.WorkflowNode(workflow_id=workflow.id, node_key=key(values["node_key"]), **_node_values(values))
    try:
        async with session.begin_nested():
            session.add(node)
            await session.flush()
    except IntegrityError:
        raise Conflict("this workflow already has a node with this key", field="key") from None
    await session.refresh(node)
    return node


async def get_node_or_raise(session: AsyncSession, *, workflow_id: uuid.UUID, node_key: str) -> models.WorkflowNode:
    node = await session.scalar(
        select(models.WorkflowNode).where(
            col(models.WorkflowNode.workflow_id) == workflow_id, col(models.WorkflowNode.node_key) == node_key
        )
    )
    if node is None:
        raise NotFound("node not found", key=node_key)
    return node


async def update_node(
    session: AsyncSession, *, workflow: models.Workflow, node_key: str, values: dict[str, Any]
) -> models.WorkflowNode:
    await get_workflow_or_raise(session, workflow_id=workflow.id, lock=True)
    node = await get_node_or_raise(session, workflow_id=workflow.id, node_key=node_key)
    for name, value in _node_values(values).items():
        setattr(node, name, value)
    session.add(node)
    await session.flush()
    await session.refresh(node)
    return node


async def remove_node(session: AsyncSession, *, workflow: models.Workflow, node_key: str) -> bool:
    """Its edges go with it (the edges' foreign keys cascade)."""
    await get_workflow_or_raise(session, workflow_id=workflow.id, lock=True)
    table = models.WorkflowNode.__table__  # type: ignore[attr-defined]
    removed = await session.scalar(
        table.delete()
        .where(and_(table.c.workflow_id == workflow.id, table.c.node_key == node_key))
        .returning(table.c.id)
    )
    return removed is not None


def find_cycle(edges: Sequence[tuple[str, str]], source: str, target: str) -> list[str] | None:
    """The cycle `source -> target -> ... -> source` that adding this edge would close, if any."""
    following: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        following[a].append(b)
    came_from: dict[str, str] = {target: ""}
    frontier = [target]
    while frontier:
        node = frontier.pop()
        if node == source:
            path = [source]
            while path[-1] != target:
                path.append(came_from[path[-1]])
            return [source, *reversed(path)]
        for nxt in following.get(node, ()):
            if nxt not in came_from:
                came_from[nxt] = node
                frontier.append(nxt)
    return None


async def add_edge(
    session: AsyncSession,
    *,
    workflow: models.Workflow,
    source: str,
    target: str,
    edge_type: str | None,
    configuration: Any,
) -> models.WorkflowEdge:
    source, target = key(source, "source"), key(target, "target")
    if source == target:
        raise BadUserInput("an edge joins two different nodes", field="target")
    await get_workflow_or_raise(session, workflow_id=workflow.id, lock=True)
    e = models.WorkflowEdge
    existing = (
        await session.execute(
            select(col(e.source_node_key), col(e.target_node_key)).where(col(e.workflow_id) == workflow.id)
        )
    ).all()
    if len(existing) >= MAX_EDGES:
        raise BadUserInput(f"a workflow has at most {MAX_EDGES} edges")
    keys = set(
        (
            await session.scalars(
                select(col(models.WorkflowNode.node_key)).where(
                    col(models.WorkflowNode.workflow_id) == workflow.id,
                    col(models.WorkflowNode.node_key).in_([source, target]),
                )
            )
        ).all()
    )
    missing = [k for k in (source, target) if k not in keys]
    if missing:
        raise BadUserInput(
            f"no node with key {missing[0]!r} in this workflow", field="source" if source in missing else "target"
        )
    if (source, target) in {(a, b) for a, b in existing}:
        raise Conflict("these two nodes are already joined", source=source, target=target)
    cycle = find_cycle([(a, b) for a, b in existing], source, target)
    if cycle is not None:
        raise BadUserInput(f"this edge would close a cycle: {' -> '.join(cycle)}", cycle=cycle)
    edge = models.WorkflowEdge(
        workflow_id=workflow.id,
        source_node_key=source,
        target_node_key=target,
        edge_type=required_text(edge_type, "type", limit=MAX_KEY) if edge_type is not None else "default",
        configuration=json_object(configuration if configuration is not None else {}, "configuration"),
    )
    session.add(edge)
    await session.flush()
    await session.refresh(edge)
    return edge


async def get_edge_or_raise(session: AsyncSession, *, edge_id: uuid.UUID) -> models.WorkflowEdge:
    edge = await session.get(models.WorkflowEdge, edge_id)
    if edge is None:
        raise NotFound("edge not found", id=str(edge_id))
    return edge


async def remove_edge(session: AsyncSession, *, edge: models.WorkflowEdge) -> None:
    await get_workflow_or_raise(session, workflow_id=edge.workflow_id, lock=True)
    # Deleted by id after the lock: a concurrent removal (of the edge or of one of its nodes) has
    # either happened, and this is NOT_FOUND, or waits.
    table = models.WorkflowEdge.__table__  # type: ignore[attr-defined]
    removed = await session.scalar(table.delete().where(table.c.id == edge.id).returning(table.c.id))
    if removed is None:
        raise NotFound("edge not found", id=str(edge.id))


# -- versions -------------------------------------------------------------------------------------


def node_snapshot(node: models.WorkflowNode) -> dict[str, Any]:
    return {
        "id": str(node.id),
        "key": node.node_key,
        "type": node.node_type,
        "label": node.label,
        "position_x": node.position_x,
        "position_y": node.position_y,
        "configuration": node.configuration,
    }


def edge_snapshot(edge: models.WorkflowEdge) -> dict[str, Any]:
    return {
        "id": str(edge.id),
        "source": edge.source_node_key,
        "target": edge.target_node_key,
        "type": edge.edge_type,
        "configuration": edge.configuration,
    }


async def publish(session: AsyncSession, *, workflow_id: uuid.UUID, user_id: uuid.UUID) -> models.Workflow:
    """Snapshot the graph and configuration as the next version, bump `version`, mark it published.

    The row lock makes concurrent publishes take turns: each snapshots what it sees and takes the
    next number, so the unique (workflow, version) key is never contended."""
    workflow = await get_workflow_or_raise(session, workflow_id=workflow_id, lock=True)
    nodes = (
        await session.scalars(
            select(models.WorkflowNode)
            .where(col(models.WorkflowNode.workflow_id) == workflow_id)
            .order_by(col(models.WorkflowNode.created_at), col(models.WorkflowNode.id))
        )
    ).all()
    edges = (
        await session.scalars(
            select(models.WorkflowEdge)
            .where(col(models.WorkflowEdge.workflow_id) == workflow_id)
            .order_by(col(models.WorkflowEdge.created_at), col(models.WorkflowEdge.id))
        )
    ).all()
    session.add(
        models.WorkflowVersion(
            workflow_id=workflow_id,
            version=workflow.version,
            name=workflow.name,
            description=workflow.description,
            configuration=workflow.configuration,
            nodes=[node_snapshot(n) for n in nodes],
            edges=[edge_snapshot(e) for e in edges],
            created_by=user_id,
        )
    )
    workflow.version += 1
    workflow.status = "published"
    session.add(workflow)
    await session.flush()
    await session.refresh(workflow)
    return workflow


async def latest_version(session: AsyncSession, *, workflow_id: uuid.UUID) -> int | None:
    value: int | None = await session.scalar(
        select(func.max(col(models.WorkflowVersion.version))).where(
            col(models.WorkflowVersion.workflow_id) == workflow_id
        )
    )
    return value
