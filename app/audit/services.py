"""Writing the audit log (:func:`record`) and reading it (:class:`AuditService`, one organization;
:class:`InstanceAuditService`, every organization, for sysadmins).

Who acts is known without parameters: a request's session carries its caller and IP
(``app.db.config.REQUEST_INFO``); a job's or the CLI's session carries nobody, so the actor is the
system. ``record`` takes them explicitly where the session does not know yet (a login).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import OffsetPagination, SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit import schemas
from app.audit.models import AuditEntry
from app.clock import utcnow
from app.db.config import REQUEST_INFO
from app.db.scoping import OrgScopedRepository, OrgScopedService

SUMMARY_MAX = 500


@runtime_checkable
class ActorLike(Protocol):
    """What the audit log needs of a caller (``app.tenants.principal.Principal`` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> UUID | None: ...
    @property
    def name(self) -> str: ...
    @property
    def organization_id(self) -> UUID | None: ...


@dataclass(frozen=True)
class Actor:
    kind: str
    id: UUID | None
    name: str
    organization_id: UUID | None


SYSTEM = Actor("system", None, "system", None)


def anonymous(name: str = "") -> Actor:
    """An unknown caller (a failed login): ``name`` is what it claimed to be (an email, a client id)."""
    return Actor("anonymous", None, name[:320], None)


def _as_actor(value: ActorLike | None) -> Actor:
    if value is None:
        return SYSTEM
    return Actor(value.kind, value.id, value.name, value.organization_id)


def request_actor(session: AsyncSession | Session) -> tuple[Actor, str | None]:
    """The caller and IP of the request ``session`` serves (the system and None outside a request)."""
    user, ip = session.info.get(REQUEST_INFO, (None, None))
    return _as_actor(user if isinstance(user, ActorLike) else None), ip


def entry(
    session: AsyncSession | Session,
    action: str,
    target_type: str,
    target_id: Any,
    summary: str = "",
    *,
    actor: ActorLike | None = None,
    ip: str | None = None,
    organization_id: UUID | None = None,
) -> AuditEntry:
    """The entry (not yet added): the request's caller and IP unless given; the organization is the
    one given (the target's), else the actor's."""
    bound, bound_ip = request_actor(session)
    who = _as_actor(actor) if actor is not None else bound
    return AuditEntry(
        at=utcnow(),
        organization_id=organization_id if organization_id is not None else who.organization_id,
        actor_kind=who.kind,
        actor_id=who.id,
        actor_name=who.name,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        summary=summary[:SUMMARY_MAX],
        ip=ip if ip is not None else bound_ip,
    )


def record(
    session: AsyncSession,
    action: str,
    target_type: str,
    target_id: Any,
    summary: str = "",
    *,
    actor: ActorLike | None = None,
    ip: str | None = None,
    organization_id: UUID | None = None,
) -> AuditEntry:
    """Add one entry to ``session`` (it is written with the session's transaction, or not at all).

    ``summary`` names fields, never values of secrets. Blasts and webhooks call, for instance,
    ``record(session, "blast.created", "blast", blast.id, "name, category_id")``."""
    added = entry(session, action, target_type, target_id, summary, actor=actor, ip=ip, organization_id=organization_id)
    session.add(added)
    return added


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class AuditQuery:
    actor: UUID | None = None
    action: str | None = None
    target_type: str | None = None
    since: datetime | None = None
    organization_id: UUID | None = None


def _filters(query: AuditQuery) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if query.actor is not None:
        out.append(AuditEntry.actor_id == query.actor)
    if query.action:
        out.append(AuditEntry.action == query.action)
    if query.target_type:
        out.append(AuditEntry.target_type == query.target_type)
    if query.since is not None:
        out.append(AuditEntry.at >= query.since)
    if query.organization_id is not None:
        out.append(AuditEntry.organization_id == query.organization_id)
    return out


_NEWEST_FIRST = OrderBy(field_name="at", sort_order="desc")
EXPORT_BATCH = 500


class AuditReader:
    """Searching and streaming the log."""

    repository: Any

    @property
    def reads_organization(self) -> UUID | None:
        """The one organization this reader sees (None: every one)."""
        return None

    def _narrow(self, query: AuditQuery) -> AuditQuery:
        return query

    async def search(self, query: AuditQuery, page: LimitOffset) -> tuple[list[AuditEntry], int]:
        rows, total = await self.repository.list_and_count(*_filters(self._narrow(query)), page, _NEWEST_FIRST)
        return list(rows), total

    async def page(self, query: AuditQuery, window: LimitOffset) -> OffsetPagination[schemas.AuditEntry]:
        rows, total = await self.search(query, window)
        items = [msgspec.convert(r, schemas.AuditEntry, from_attributes=True) for r in rows]
        return OffsetPagination(items=items, total=total, limit=window.limit, offset=window.offset)

    async def stream(self, query: AuditQuery) -> AsyncIterator[list[AuditEntry]]:
        """Every matching entry, newest first, in batches (for the CSV export)."""
        statement = self.repository.statement.where(*_filters(self._narrow(query)))
        statement = statement.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        offset = 0
        while True:
            batch = list(await self.repository.session.scalars(statement.limit(EXPORT_BATCH).offset(offset)))
            if not batch:
                return
            yield batch
            offset += len(batch)


class AuditRepository(OrgScopedRepository[AuditEntry]):
    model_type = AuditEntry


class AuditService(AuditReader, OrgScopedService[AuditEntry]):
    """One organization's log (org admins): an ``organization_id`` in the query is ignored."""

    repository_type = AuditRepository

    @property
    def reads_organization(self) -> UUID | None:
        return self.organization_id

    def _narrow(self, query: AuditQuery) -> AuditQuery:
        return replace(query, organization_id=None)


class InstanceAuditRepository(SQLAlchemyAsyncRepository[AuditEntry]):
    model_type = AuditEntry


class InstanceAuditService(AuditReader, SQLAlchemyAsyncRepositoryService[AuditEntry]):
    """Every organization's log (sysadmins; ``organization_id`` in the query narrows it)."""

    repository_type = InstanceAuditRepository
