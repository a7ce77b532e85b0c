"""The reads of an accepted message in ONE statement, built once per process.

Accepting a message reads its contact (the template's variables, the address, the opt-out), the chain it
goes through (the one asked for, else the contact's default, else the organization's:
:meth:`ServicechainService.resolve`'s rule) and its organization (suspended or not). Read one by one through
the ORM these were three statements, each built anew with its cache key, three round trips through
aiosqlite's thread and the ORM's loading: a third of the web process's time per ``POST /messages``
(docs/performance.md, "Fourth pass"). Here they are one Core SELECT of the contact's row, joined to its
organization and outer-joined to the chain the rule picks — a ``COALESCE`` of the requested id, the contact's
and the organization's defaults.

Tenancy stays in the org-scoped layer: the statement is ``ContactRepository.core_select`` (its
``organization_id`` a parameter only :meth:`OrgScopedRepository.run` fills in, with its own organization) and
the chain must belong to the same organization; another organization's contact or chain is not found (404).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, func

from app.contacts.models import Contact
from app.contacts.services import ContactRepository
from app.db.scoping import OrgScopedRepository
from app.errors import NotFound, ValidationProblem
from app.messaging.models import Servicechain
from app.tenants.models import Organization

NO_CHAIN = (
    "No servicechain given, and neither the contact nor the organization has a default one. Name a chain "
    "for the message (servicechain_id), or have an org admin choose the organization's default servicechain "
    "under Settings (/settings, or PATCH /api/v1/organization)."
)

#: the contact's columns an accepted message needs: the template's variables, the plugins' addresses, the
#: opt-out, its default chain
CONTACT_COLUMNS = (
    "id",
    "organization_id",
    "title",
    "first_name",
    "surname",
    "phone",
    "email",
    "telegram_chat_id",
    "servicechain_id",
    "opted_out",
)
_CONTACT_ID, _REQUESTED = "accept_contact_id", "accept_servicechain_id"


@dataclass(frozen=True)
class Accepting:
    """What the accept read: the contact and its organization (transient: no session holds them), and the
    chain the message goes through (id and services) — or why none does, raised by :meth:`chain` only once
    the content has been checked, so a request wrong in both answers for its content first, as it always has."""

    contact: Contact
    organization: Organization
    #: a chain was asked for, or the contact or the organization has a default one
    chain_chosen: bool
    #: the chosen chain, if it is the organization's
    chain_id: UUID | None
    services: list[str]

    def chain(self) -> tuple[UUID, list[str]]:
        """The chain's id and services; raises :class:`ValidationProblem` (422) when no chain applies and
        :class:`NotFound` (404) for a chain that is not the organization's."""
        if not self.chain_chosen:
            raise ValidationProblem(NO_CHAIN, "servicechain_id")
        if self.chain_id is None:
            raise NotFound("No servicechain with this id in your organization.")
        return self.chain_id, self.services


@functools.cache
def statement() -> Select[Any]:
    """The contact's row with its organization's and the chosen chain's columns (built once: SQLAlchemy keeps
    its compiled form and cache key on this object)."""
    contact, org, chain = Contact.__table__.c, Organization.__table__, Servicechain.__table__
    requested = bindparam(_REQUESTED, type_=contact.servicechain_id.type)
    chosen = func.coalesce(requested, contact.servicechain_id, org.c.default_servicechain_id)
    return (
        ContactRepository.core_select(
            *(contact[name] for name in CONTACT_COLUMNS),
            org.c.suspended,
            chosen.label("chosen_chain_id"),
            chain.c.id.label("chain_id"),
            chain.c.services.label("chain_services"),
        )
        .join(org, org.c.id == contact.organization_id)
        .outerjoin(chain, (chain.c.id == chosen) & (chain.c.organization_id == contact.organization_id))
        .where(contact.id == bindparam(_CONTACT_ID, type_=contact.id.type))
    )


async def read(repository: OrgScopedRepository[Any], contact_id: UUID, requested_chain: UUID | None) -> Accepting:
    """The contact ``contact_id`` of ``repository``'s organization, its organization and the message's chain.
    Raises :class:`NotFound` (404) for a contact that is not the organization's; a missing chain is
    :meth:`Accepting.chain`'s to raise."""
    rows = await repository.run(statement(), {_CONTACT_ID: contact_id, _REQUESTED: requested_chain})
    if not rows:
        raise NotFound("No contact with this id in your organization.")
    row = rows[0]
    contact = Contact(**{name: getattr(row, name) for name in CONTACT_COLUMNS})
    organization = Organization(id=row.organization_id, suspended=row.suspended)
    chosen = row.chosen_chain_id is not None
    return Accepting(contact, organization, chosen, row.chain_id, list(row.chain_services or []))
