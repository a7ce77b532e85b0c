"""The organization-scoped data layer.

Every repository of tenant data is built for one organization: its base statement filters on
``organization_id`` and every row it adds is stamped with it. Handlers never add the filter
themselves, so they cannot forget it; an id of another organization is simply not found (404).
:func:`references_own_row` checks a foreign key to another organization-scoped table without importing the
domain that owns it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, Row, Select, bindparam, exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import Base
from app.db.config import reads_only_engine

ModelT = TypeVar("ModelT", bound=Base)
#: the organization in :meth:`OrgScopedRepository.core_select`: a parameter only ``run`` fills in
ORGANIZATION_PARAM = "scoped_organization_id"


@functools.lru_cache(maxsize=4096)
def _org_statement(model: type[Base], organization_id: UUID) -> Select[Any]:
    """``SELECT model WHERE organization_id = …``, made once per (model, organization) and shared: statements
    are immutable, and building the comparison costs more than the rest of a repository (one per request)."""
    return select(model).where(model.organization_id == organization_id)  # type: ignore[attr-defined]


class OrgScopedRepository(SQLAlchemyAsyncRepository[ModelT], Generic[ModelT]):
    """A repository that sees and writes only the rows of one organization."""

    # A COUNT(*) OVER () window yields no row, hence a total of 0, for a page past the end.
    count_with_window_function = False

    def __init__(self, *, session: AsyncSession, organization_id: UUID, **kwargs: Any) -> None:
        if organization_id is None:  # pragma: no cover - a programming error, never user input
            raise ValueError("an organization-scoped repository needs an organization_id")
        self.organization_id = organization_id
        # The services pass ``statement=None`` explicitly, so never rely on ``setdefault`` here.
        base = kwargs.get("statement")
        if base is None:
            kwargs["statement"] = _org_statement(self.model_type, organization_id)
        else:
            kwargs["statement"] = base.where(self.model_type.organization_id == organization_id)  # type: ignore[attr-defined]
        super().__init__(session=session, **kwargs)

    def _stamp(self, data: ModelT) -> ModelT:
        current = getattr(data, "organization_id", None)
        if current is not None and current != self.organization_id:
            raise NotFoundError("Organization not found")
        data.organization_id = self.organization_id  # type: ignore[attr-defined]
        return data

    async def add(self, data: ModelT, **kwargs: Any) -> ModelT:
        return await super().add(self._stamp(data), **kwargs)

    async def add_many(self, data: list[ModelT], **kwargs: Any) -> Sequence[ModelT]:
        return await super().add_many([self._stamp(d) for d in data], **kwargs)

    async def update(self, data: ModelT, **kwargs: Any) -> ModelT:
        return await super().update(self._stamp(data), **kwargs)

    async def insert_many(self, rows: list[dict[str, Any]]) -> None:
        """Rows of plain column values in one multi-row INSERT, each stamped with this organization: for
        bulk imports, without the unit of work's cost per object (give the ids to know them)."""
        stamped = []
        for row in rows:
            if row.get("organization_id", self.organization_id) != self.organization_id:
                raise NotFoundError("Organization not found")
            stamped.append({**row, "organization_id": self.organization_id})
        if stamped:
            await self.session.execute(insert(self.model_type), stamped)

    # Statements built once per process and run for many organizations (the API's hot reads): the
    # organization is a required named parameter, which only ``run`` fills in, with its own organization.

    @classmethod
    def core_select(cls, *columns: ColumnElement[Any]) -> Select[Any]:
        """A Core ``SELECT columns FROM <the model's table> WHERE organization_id = :scoped_organization_id``.

        Build it once and keep it: SQLAlchemy keys its compiled form on the statement object (memoized),
        so running the same object again skips building and the cache key. Run it with :meth:`run`; run any
        other way it fails (the parameter has no value)."""
        table = cls.model_type.__table__
        column = table.c.organization_id
        return select(*columns).select_from(table).where(column == bindparam(ORGANIZATION_PARAM, required=True))

    async def run(self, statement: Select[Any], params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        """The rows of a statement built on :meth:`core_select` (of this table or another org-scoped one) for
        this organization: Core rows, no ORM loading. In a reads-only request (an API GET on PostgreSQL) on a
        connection checked out for this statement alone, else on the session's."""
        values = {**(params or {}), ORGANIZATION_PARAM: self.organization_id}
        engine = reads_only_engine(self.session)
        if engine is not None:
            async with engine.connect() as connection:
                return (await connection.execute(statement, values)).all()
        connection = await self.session.connection()
        return (await connection.execute(statement, values)).all()

    # The bulk operations of the base class build their own statements without ``self.statement``:
    # each is narrowed to this organization here, or refused.

    @property
    def _in_org(self) -> Any:
        return self.model_type.organization_id == self.organization_id  # type: ignore[attr-defined]

    async def _own_ids(self, ids: Sequence[Any], id_attribute: Any = None) -> list[Any]:
        if id_attribute is None or isinstance(id_attribute, str):
            column = getattr(self.model_type, id_attribute or self.id_attribute)
        else:
            column = id_attribute
        return list(await self.session.scalars(select(column).where(self._in_org, column.in_(list(ids)))))

    async def delete_many(self, item_ids: list[Any], **kwargs: Any) -> Sequence[ModelT]:
        own = await self._own_ids(item_ids, kwargs.get("id_attribute"))
        return await super().delete_many(own, **kwargs) if own else []

    async def delete_where(self, *filters: Any, **kwargs: Any) -> Sequence[ModelT]:
        return await super().delete_where(*filters, self._in_org, **kwargs)

    async def update_many(self, data: list[ModelT], **kwargs: Any) -> list[ModelT]:
        ids = {getattr(item, self.id_attribute) for item in data}
        if len(await self._own_ids(list(ids))) != len(ids):
            raise NotFoundError("Not found")
        return await super().update_many([self._stamp(item) for item in data], **kwargs)

    async def upsert(self, *args: Any, **kwargs: Any) -> ModelT:
        raise NotImplementedError("upsert is not organization-scoped here; use add or update")

    async def upsert_many(self, *args: Any, **kwargs: Any) -> list[ModelT]:
        raise NotImplementedError("upsert_many is not organization-scoped here; use add_many or update_many")


class OrgScopedService(SQLAlchemyAsyncRepositoryService[ModelT], Generic[ModelT]):
    """A service over an :class:`OrgScopedRepository`; construct it with the caller's organization."""

    repository_type: type[OrgScopedRepository[ModelT]]
    count_with_window_function = False  # the service's setting overrides the repository's

    def __init__(self, session: AsyncSession, organization_id: UUID, **kwargs: Any) -> None:
        self.organization_id = organization_id
        super().__init__(session=session, organization_id=organization_id, **kwargs)


async def references_own_row(session: AsyncSession, column: Any, organization_id: UUID, value: Any) -> bool:
    """Whether foreign key ``column`` (a mapped attribute, e.g. ``Contact.servicechain_id``) set to ``value``
    points at a row of ``organization_id``: the referenced table must be organization-scoped. Another
    organization's id answers False, exactly as an unknown one."""
    (foreign_key,) = column.property.columns[0].foreign_keys
    target = foreign_key.column
    owner = target.table.c.organization_id
    return bool(await session.scalar(select(exists().where(target == value, owner == organization_id))))
