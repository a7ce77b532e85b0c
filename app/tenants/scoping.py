"""The organization-scoped data layer.

Every repository of tenant data is built for one organization: its base statement filters on
``organization_id`` and every row it adds is stamped with it. Handlers never add the filter
themselves, so they cannot forget it; an id of another organization is simply not found (404).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import Base

ModelT = TypeVar("ModelT", bound=Base)


class OrgScopedRepository(SQLAlchemyAsyncRepository[ModelT], Generic[ModelT]):
    """A repository that sees and writes only the rows of one organization."""

    def __init__(self, *, session: AsyncSession, organization_id: UUID, **kwargs: Any) -> None:
        if organization_id is None:  # pragma: no cover - a programming error, never user input
            raise ValueError("an organization-scoped repository needs an organization_id")
        self.organization_id = organization_id
        column = self.model_type.organization_id  # type: ignore[attr-defined]
        kwargs.setdefault("statement", select(self.model_type).where(column == organization_id))
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


class OrgScopedService(SQLAlchemyAsyncRepositoryService[ModelT], Generic[ModelT]):
    """A service over an :class:`OrgScopedRepository`; construct it with the caller's organization."""

    repository_type: type[OrgScopedRepository[ModelT]]

    def __init__(self, session: AsyncSession, organization_id: UUID, **kwargs: Any) -> None:
        self.organization_id = organization_id
        super().__init__(session=session, organization_id=organization_id, **kwargs)
