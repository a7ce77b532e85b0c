"""A page of the contact list as the API answers it: ONE statement, built once, no models loaded.

The statement is the organization-scoped repository's Core select (``organization_id`` a parameter that
only the repository fills in with its own organization: app/db/scoping.py) with the search filters. Each
row carries the contact's columns in :class:`schemas.Contact`'s field order, its category ids (a
correlated subquery: on PostgreSQL an array in UUID order, which is ``sorted(key=str)``'s; on SQLite
their hex digits, parsed and sorted here) and the total matching the filters (a scalar subquery).

Without ``q`` the statement is built once per process for each (dialect, category filter or not) and
reused: its compiled form is found without building anything or walking the statement for a cache key
(SQLAlchemy memoizes the key on the statement object). A search builds its own (its words are literals).

On PostgreSQL the values are read as asyncpg decodes them: its UUIDs are ``uuid.UUID`` instances (a
subclass msgspec encodes like the base class), ``timestamptz`` values aware UTC datetimes, so the
columns' result processing (advanced-alchemy's ``GUID`` and ``DateTimeUTC``: a Python call per value,
~900 a page) is skipped. On SQLite, where UUIDs are 16 bytes, the column types convert them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from advanced_alchemy.filters import LimitOffset
from sqlalchemy import ColumnElement, Integer, Select, bindparam, exists, func, select, type_coerce
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.types import NullType

from app.contacts import schemas
from app.contacts.models import Contact, contact_category
from app.db.scoping import OrgScopedRepository

_TABLE = Contact.__table__
_LINKS = contact_category.c
#: schemas.Contact's fields; all are columns of ``contact`` except ``category_ids``
FIELDS = schemas.Contact.__struct_fields__
_AT = FIELDS.index("category_ids")
_RAW = NullType()
_LIMIT, _OFFSET, _CATEGORY = "page_limit", "page_offset", "page_category_id"


def _category_ids(postgresql: bool) -> ColumnElement[Any]:
    """The row's category ids (correlated to the outer ``contact``): NULL when it has none."""
    members = select(_LINKS.category_id).where(_LINKS.contact_id == _TABLE.c.id)
    if postgresql:
        aggregate = func.array_agg(aggregate_order_by(_LINKS.category_id, _LINKS.category_id))
        return type_coerce(members.with_only_columns(aggregate).scalar_subquery(), _RAW)
    return members.with_only_columns(func.group_concat(func.hex(_LINKS.category_id))).scalar_subquery()


def _filters(by_category: bool, search: Sequence[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
    where = list(search)
    if by_category:
        in_category = _LINKS.contact_id == _TABLE.c.id, _LINKS.category_id == bindparam(_CATEGORY)
        where.append(exists().where(*in_category))
    return where


def build(
    repository: type[OrgScopedRepository[Any]],
    postgresql: bool,
    by_category: bool,
    search: Sequence[ColumnElement[bool]] = (),
) -> tuple[Select[Any], Select[Any]]:
    """(the page's statement, the count's) for ``repository``'s organization, ``search`` clauses and a category."""
    where = _filters(by_category, search)
    count = repository.core_select(func.count()).where(*where)
    columns: list[ColumnElement[Any]] = []
    for name in FIELDS:
        if name == "category_ids":
            columns.append(_category_ids(postgresql))
        else:
            columns.append(type_coerce(_TABLE.c[name], _RAW) if postgresql else _TABLE.c[name])
    columns.append(count.correlate(None).scalar_subquery().label("total"))
    page = (
        repository.core_select(*columns)
        .where(*where)
        .order_by(_TABLE.c.created_at.desc(), _TABLE.c.id.desc())
        .limit(bindparam(_LIMIT, type_=Integer))
        .offset(bindparam(_OFFSET, type_=Integer))
    )
    return page, count


built_once = functools.cache(build)


def _as_given(ids: list[UUID] | None) -> list[UUID]:
    return ids or []


def _from_hex(joined: str | None) -> list[UUID]:
    return sorted((UUID(hex=h) for h in joined.split(",")), key=str) if joined else []


async def contact_page(
    repository: OrgScopedRepository[Any],
    page: LimitOffset,
    search: Sequence[ColumnElement[bool]],
    category_id: UUID | None,
) -> tuple[list[schemas.Contact], int]:
    """(the page's contacts, the total matching); a page past the end counts apart."""
    postgresql = repository.session.get_bind().dialect.name == "postgresql"
    shape = (type(repository), postgresql, category_id is not None)
    statement, count = build(*shape, search) if search else built_once(*shape)
    params: dict[str, Any] = {_LIMIT: page.limit, _OFFSET: page.offset}
    if category_id is not None:
        params[_CATEGORY] = category_id
    rows = await repository.run(statement, params)
    if not rows:
        (total,) = (await repository.run(count, {k: v for k, v in params.items() if k == _CATEGORY}))[0]
        return [], int(total)
    ids = _as_given if postgresql else _from_hex
    # positional: the columns come in the struct's field order (the fastest way to build a msgspec Struct)
    items = [schemas.Contact(*[*row[:_AT], ids(row[_AT]), *row[_AT + 1 : -1]]) for row in rows]
    return items, int(rows[0][-1])
