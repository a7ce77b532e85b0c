"""The org-scoped layer's statements built once (``core_select`` + ``run``, app/db/scoping.py): a statement
made for no organization in particular sees, through a repository, that repository's organization only,
and cannot be run any other way. Both backends."""

from __future__ import annotations

import pytest
from advanced_alchemy.filters import LimitOffset
from sqlalchemy import exc as sa_exc
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contacts import listing
from app.contacts.models import Contact
from app.contacts.services import ContactRepository, ContactService
from tests.conftest import World


async def test_one_statement_each_organization_sees_its_own(
    sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    home, other = await world.org(), await world.org()
    async with sessions() as session:
        for org, names in ((home, ["Ada", "Grace"]), (other, ["Secret"])):
            contacts = ContactService(session=session, organization_id=org.id)
            for name in names:
                await contacts.create({"first_name": name})
        await session.commit()
    statement = ContactRepository.core_select(Contact.__table__.c.first_name).order_by(Contact.__table__.c.first_name)
    async with sessions() as session:
        mine = ContactRepository(session=session, organization_id=home.id)
        theirs = ContactRepository(session=session, organization_id=other.id)
        assert [r[0] for r in await mine.run(statement)] == ["Ada", "Grace"]
        assert [r[0] for r in await theirs.run(statement)] == ["Secret"]
        # run any other way, the organization has no value: refused, never every organization's rows
        with pytest.raises(sa_exc.StatementError, match="scoped_organization_id"):
            await session.execute(statement)
        with pytest.raises(sa_exc.StatementError, match="scoped_organization_id"):
            await session.scalar(ContactRepository.core_select(func.count()))


async def test_the_page_statement_is_built_once_and_shared(
    sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    home, other = await world.org(), await world.org()
    async with sessions() as session:
        for org, name in ((home, "Ada"), (other, "Secret")):
            await ContactService(session=session, organization_id=org.id).create({"first_name": name})
        await session.commit()
    async with sessions() as session:
        pages = [
            await ContactService(session=session, organization_id=org.id).page(LimitOffset(50, 0))
            for org in (home, other, home)
        ]
    assert [[c.first_name for c in items] for items, _ in pages] == [["Ada"], ["Secret"], ["Ada"]]
    assert [total for _, total in pages] == [1, 1, 1]
    assert listing.built_once.cache_info().hits >= 2  # the same statement object for both organizations
