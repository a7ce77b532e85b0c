"""The organization-scoped data layer: every operation of a scoped repository stays in its organization."""

from __future__ import annotations

from uuid import UUID

import pytest
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.tenants.models import Organization, Role, User
from app.tenants.services import UserRepository, UserService
from tests.conftest import World


async def _users(world: World) -> tuple[Organization, Organization, User, User]:
    mine, theirs = await world.org(), await world.org()
    return mine, theirs, await world.user(mine, Role.USER), await world.user(theirs, Role.USER)


async def _exists(sessions: async_sessionmaker[AsyncSession], user_id: UUID) -> bool:
    async with sessions() as session:
        return bool(await session.scalar(select(func.count()).select_from(User).where(User.id == user_id)))


async def test_reads_see_only_the_organization(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mine, _, me, stranger = await _users(world)
    async with sessions() as session:
        service = UserService(session=session, organization_id=mine.id)
        assert (await service.get(me.id)).id == me.id
        with pytest.raises(NotFoundError):
            await service.get(stranger.id)
        assert await service.get_one_or_none(User.id == stranger.id) is None
        assert await service.get_one_or_none(User.email == stranger.email) is None
        with pytest.raises(NotFoundError):
            await service.get_one(User.id == stranger.id)
        assert not await service.exists(User.id == stranger.id)
        assert await service.count() == 1
        items, total = await service.list_and_count(LimitOffset(limit=50, offset=0))
        assert total == 1 and [u.id for u in items] == [me.id]
        assert [u.id for u in await service.list()] == [me.id]


async def test_writes_cannot_reach_another_organization(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mine, _theirs, me, stranger = await _users(world)
    async with sessions() as session:
        service = UserService(session=session, organization_id=mine.id)
        with pytest.raises(NotFoundError):
            await service.update({"name": "Hijacked"}, item_id=stranger.id)
        with pytest.raises(NotFoundError):
            await service.delete(stranger.id)
        await session.rollback()
    async with sessions() as session:
        repo = UserRepository(session=session, organization_id=mine.id)
        assert await repo.delete_many([stranger.id]) == []
        assert await repo.delete_where(User.id == stranger.id) == []
        outsider = await session.get(User, stranger.id)
        assert outsider is not None
        outsider.name = "Hijacked"
        with pytest.raises(NotFoundError):
            await repo.update_many([outsider])
        await session.rollback()
        with pytest.raises(NotImplementedError):
            await repo.upsert(User(id=stranger.id, email="x@example.com", name="x", role=Role.USER))
        with pytest.raises(NotImplementedError):
            await repo.upsert_many([User(id=stranger.id, email="x@example.com", name="x", role=Role.USER)])
        await session.rollback()
    assert await _exists(sessions, stranger.id)
    async with sessions() as session:
        assert (await session.get(User, stranger.id)).name != "Hijacked"  # type: ignore[union-attr]

    # within the organization the same operations work
    extra = await world.user(mine, Role.USER)
    async with sessions() as session:
        repo = UserRepository(session=session, organization_id=mine.id)
        deleted = await repo.delete_many([extra.id, stranger.id])
        assert [u.id for u in deleted] == [extra.id]
        await session.commit()
    assert not await _exists(sessions, extra.id)
    assert await _exists(sessions, stranger.id)
    async with sessions() as session:
        repo = UserRepository(session=session, organization_id=mine.id)
        deleted = await repo.delete_where(User.role == Role.USER)
        assert [u.id for u in deleted] == [me.id]
        await session.commit()
    assert await _exists(sessions, stranger.id)


async def test_new_rows_are_stamped_with_the_organization(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mine, theirs = await world.org(), await world.org()
    async with sessions() as session:
        service = UserService(session=session, organization_id=mine.id)
        created = await service.create({"email": "a@example.com", "name": "A", "role": Role.USER})
        assert created.organization_id == mine.id
        with pytest.raises(NotFoundError):  # a row that names another organization is refused
            await service.create(
                {"email": "b@example.com", "name": "B", "role": Role.USER, "organization_id": theirs.id}
            )
        await session.rollback()
