"""Who manages which accounts: the rules of listing, creating, changing and removing users and API
clients on behalf of a caller, written once for every face.

An org admin (or an API client holding ``users:admin``) manages the accounts of their own organization;
a sysadmin, who belongs to none, manages everyone's and names the organization a new account goes to
(422 without it). Another organization's account, or naming another organization, answers 404 exactly
like a missing one. What a credential may grant (roles, scopes, passwords) is decided by the services
underneath (:meth:`UserService.create_user` in ``users.py``, :meth:`ApiClientService.create_client`).

Both are provided with ``service(UserAdmin)`` / ``service(ApiClientAdmin)`` (``app/tenants/deps.py``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.service import ResultConverter
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationProblem
from app.tenants import flows, schemas
from app.tenants.deps import acting_organization, organization_required, scoped
from app.tenants.models import ApiClient, Organization, Role, User
from app.tenants.principal import Principal
from app.tenants.services import ApiClientService, InstanceApiClientService
from app.tenants.users import AccountService, UserService


async def organization_of_new_account(session: AsyncSession, actor: Principal, organization_id: UUID | None) -> UUID:
    """The organization a new user or API client goes to: the actor's own. A sysadmin names an existing one
    (422 without it, 404 for an unknown one); a member naming another organization is told 404, exactly
    like for a missing one."""
    if actor.is_sysadmin:
        org = organization_required(actor, organization_id)
        if await session.get(Organization, org) is None:
            raise NotFoundError("Organization not found")
        return org
    if organization_id is not None and organization_id != actor.organization_id:
        raise NotFoundError("Organization not found")
    return acting_organization(actor)


class UserAdmin(ResultConverter):
    """The users ``principal`` manages (``/users``): their organization's, or everyone's for a sysadmin."""

    def __init__(self, *, session: AsyncSession, principal: Principal) -> None:
        self.session = session
        self.actor = principal

    def _listing(self, organization_id: UUID | None) -> UserService | AccountService:
        if self.actor.is_sysadmin and organization_id is None:
            return AccountService(session=self.session)
        return scoped(UserService, self.session, acting_organization(self.actor, organization_id))

    async def _service_of(self, user_id: UUID) -> UserService | AccountService:
        """The service that holds ``user_id`` for the actor (a sysadmin's reach: any account, sysadmins too)."""
        if not self.actor.is_sysadmin:
            return scoped(UserService, self.session, acting_organization(self.actor))
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFoundError("User not found")
        if user.organization_id is None:
            return AccountService(session=self.session)
        return scoped(UserService, self.session, user.organization_id)

    async def _home_of_new_user(self, role: str, organization_id: UUID | None) -> UserService | AccountService:
        if role == Role.SYSADMIN:
            if organization_id is not None:
                raise ValidationProblem("A sysadmin belongs to no organization.", "organization_id")
            return AccountService(session=self.session)
        org = await organization_of_new_account(self.session, self.actor, organization_id)
        return scoped(UserService, self.session, org)

    async def list_and_count(self, *filters: Any, organization_id: UUID | None = None) -> tuple[list[User], int]:
        """A sysadmin sees every account unless naming an organization; anyone else, their organization's."""
        items, total = await self._listing(organization_id).list_and_count(*filters)
        return list(items), total

    async def create(self, data: schemas.UserCreate, queue: Queue) -> User:
        """A new user; one created without a password is mailed a link to choose one."""
        body = msgspec.structs.asdict(data)
        service = await self._home_of_new_user(data.role, body.pop("organization_id"))
        user = await service.create_user(self.actor, body)
        await flows.invite_new_user(self.session, queue, user)
        return user

    async def get(self, user_id: UUID) -> User:
        service = await self._service_of(user_id)
        user: User = await service.get(user_id)
        return user

    async def update(self, user_id: UUID, changes: dict[str, Any]) -> User:
        service = await self._service_of(user_id)
        return await service.update_user(self.actor, user_id, changes)

    async def remove(self, user_id: UUID) -> None:
        service = await self._service_of(user_id)
        await service.remove_user(self.actor, user_id)


class ApiClientAdmin(ResultConverter):
    """The API clients ``principal`` manages (``/clients``): their organization's, or everyone's for a sysadmin."""

    def __init__(self, *, session: AsyncSession, principal: Principal) -> None:
        self.session = session
        self.actor = principal

    async def _service_of(self, client_id: UUID) -> ApiClientService:
        if not self.actor.is_sysadmin:
            return scoped(ApiClientService, self.session, acting_organization(self.actor))
        row = await self.session.get(ApiClient, client_id)
        if row is None:
            raise NotFoundError("API client not found")
        return scoped(ApiClientService, self.session, row.organization_id)

    async def list_and_count(self, *filters: Any, organization_id: UUID | None = None) -> tuple[list[ApiClient], int]:
        """A sysadmin sees every organization's clients unless naming one; anyone else, their organization's."""
        clients: ApiClientService | InstanceApiClientService
        if self.actor.is_sysadmin and organization_id is None:
            clients = InstanceApiClientService(session=self.session)
        else:
            clients = scoped(ApiClientService, self.session, acting_organization(self.actor, organization_id))
        items, total = await clients.list_and_count(*filters)
        return list(items), total

    async def create(self, data: schemas.ApiClientCreate) -> tuple[ApiClient, str]:
        """A new client and its secret (shown once), with no scope beyond the actor's."""
        org = await organization_of_new_account(self.session, self.actor, data.organization_id)
        return await scoped(ApiClientService, self.session, org).create_client(self.actor, data.name, data.scopes)

    async def get(self, client_id: UUID) -> ApiClient:
        return await (await self._service_of(client_id)).get(client_id)

    async def revoke(self, client_id: UUID) -> ApiClient:
        return await (await self._service_of(client_id)).revoke(client_id)
