"""REST controllers of the account resources: me, organizations, users, API clients, tokens."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import changes
from app.messaging import credits
from app.tenants import schemas
from app.tenants.accounts import ApiClientAdmin, UserAdmin
from app.tenants.deps import service
from app.tenants.guards import requires_org_admin, requires_sysadmin, requires_user
from app.tenants.models import Organization, User
from app.tenants.principal import Principal
from app.tenants.services import OrganizationService, TokenService

NEWEST = OrderBy(field_name="created_at", sort_order="desc")


class MeController(Controller):
    path = "/me"
    tags = ["me"]

    @get("", summary="The caller: user or client, organization, role, scopes")
    async def me(self, principal: Principal, db_session: AsyncSession) -> schemas.Me:
        org = await db_session.get(Organization, principal.organization_id) if principal.organization_id else None
        return schemas.Me(
            kind=principal.kind,
            id=principal.id,
            name=principal.name,
            email=principal.email,
            role=principal.role.value,
            organization=msgspec.convert(org, schemas.Organization, from_attributes=True) if org else None,
            scopes=sorted(principal.scopes),
        )


class OrganizationController(Controller):
    path = "/organizations"
    tags = ["organizations"]
    guards = [requires_sysadmin]
    dependencies = {"organizations": service(OrganizationService)}

    @get("", summary="List organizations")
    async def list_organizations(
        self, organizations: OrganizationService, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Organization]:
        items, total = await organizations.list_and_count(limit_offset, NEWEST)
        return organizations.to_schema(items, total, filters=[limit_offset], schema_type=schemas.Organization)

    @post("", summary="Create an organization")
    async def create_organization(
        self, organizations: OrganizationService, data: schemas.OrganizationCreate
    ) -> schemas.Organization:
        org = await organizations.create(msgspec.structs.asdict(data))
        return organizations.to_schema(org, schema_type=schemas.Organization)

    @get("/{organization_id:uuid}", summary="Get an organization")
    async def get_organization(self, organizations: OrganizationService, organization_id: UUID) -> schemas.Organization:
        return organizations.to_schema(await organizations.get(organization_id), schema_type=schemas.Organization)

    @patch("/{organization_id:uuid}", summary="Update (rename, suspend, change plan of) an organization")
    async def update_organization(
        self, organizations: OrganizationService, organization_id: UUID, data: schemas.OrganizationUpdate
    ) -> schemas.Organization:
        org = await organizations.update(changes(data), item_id=organization_id)
        return organizations.to_schema(org, schema_type=schemas.Organization)

    @delete("/{organization_id:uuid}", summary="Delete an organization and all its data")
    async def delete_organization(self, organizations: OrganizationService, organization_id: UUID) -> None:
        await organizations.delete(organization_id)

    @post("/{organization_id:uuid}/credits", summary="Add credits to an organization", status_code=200)
    async def add_credits(
        self, organizations: OrganizationService, organization_id: UUID, data: schemas.CreditsAdd
    ) -> schemas.Organization:
        await organizations.get(organization_id)
        await credits.add(organizations.repository.session, organization_id, data.amount)
        org = await organizations.get(organization_id)
        await organizations.repository.session.refresh(org)
        return organizations.to_schema(org, schema_type=schemas.Organization)


class UserController(Controller):
    """Org admins manage their organization's users; a sysadmin manages anyone's (``app/tenants/accounts.py``)."""

    path = "/users"
    tags = ["users"]
    guards = [requires_org_admin]
    dependencies = {"users": service(UserAdmin)}

    @get("", summary="List users")
    async def list_users(
        self,
        users: UserAdmin,
        limit_offset: LimitOffset,
        organization_id: Annotated[UUID | None, Parameter(query="organization_id")] = None,
    ) -> OffsetPagination[schemas.User]:
        items, total = await users.list_and_count(limit_offset, NEWEST, organization_id=organization_id)
        return users.to_schema(items, total, filters=[limit_offset], schema_type=schemas.User)

    @post("", summary="Create a user (without a password, they are mailed a link to choose one)")
    async def create_user(self, users: UserAdmin, queue: Queue, data: schemas.UserCreate) -> schemas.User:
        return users.to_schema(await users.create(data, queue), schema_type=schemas.User)

    @get("/{user_id:uuid}", summary="Get a user")
    async def get_user(self, users: UserAdmin, user_id: UUID) -> schemas.User:
        return users.to_schema(await users.get(user_id), schema_type=schemas.User)

    @patch("/{user_id:uuid}", summary="Update a user (name, email, role, password, active)")
    async def update_user(self, users: UserAdmin, user_id: UUID, data: schemas.UserUpdate) -> schemas.User:
        return users.to_schema(await users.update(user_id, changes(data)), schema_type=schemas.User)

    @delete("/{user_id:uuid}", summary="Remove a user")
    async def delete_user(self, users: UserAdmin, user_id: UUID) -> None:
        await users.remove(user_id)


class ApiClientController(Controller):
    """Org admins manage their organization's API clients; a sysadmin manages anyone's."""

    path = "/clients"
    tags = ["API clients"]
    guards = [requires_org_admin]
    dependencies = {"clients": service(ApiClientAdmin)}

    @get("", summary="List API clients")
    async def list_clients(
        self,
        clients: ApiClientAdmin,
        limit_offset: LimitOffset,
        organization_id: Annotated[UUID | None, Parameter(query="organization_id")] = None,
    ) -> OffsetPagination[schemas.ApiClient]:
        items, total = await clients.list_and_count(limit_offset, NEWEST, organization_id=organization_id)
        return clients.to_schema(items, total, filters=[limit_offset], schema_type=schemas.ApiClient)

    @post("", summary="Create an API client (the secret is returned once)")
    async def create_client(self, clients: ApiClientAdmin, data: schemas.ApiClientCreate) -> schemas.ApiClient:
        client, secret = await clients.create(data)
        return msgspec.structs.replace(clients.to_schema(client, schema_type=schemas.ApiClient), client_secret=secret)

    @get("/{client_id:uuid}", summary="Get an API client")
    async def get_client(self, clients: ApiClientAdmin, client_id: UUID) -> schemas.ApiClient:
        return clients.to_schema(await clients.get(client_id), schema_type=schemas.ApiClient)

    @delete("/{client_id:uuid}", summary="Revoke an API client and its tokens")
    async def revoke_client(self, clients: ApiClientAdmin, client_id: UUID) -> None:
        await clients.revoke(client_id)


class TokenController(Controller):
    """Personal access tokens of the calling user."""

    path = "/tokens"
    tags = ["tokens"]
    guards = [requires_user]
    dependencies = {"tokens": service(TokenService)}

    @get("", summary="List my personal access tokens")
    async def list_tokens(
        self, tokens: TokenService, principal: Principal, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.PersonalToken]:
        items, total = await tokens.list_and_count(*tokens.for_user(principal.id), limit_offset, NEWEST)
        return tokens.to_schema(items, total, filters=[limit_offset], schema_type=schemas.PersonalToken)

    @post("", summary="Create a personal access token (returned once)")
    async def create_token(
        self, tokens: TokenService, principal: Principal, db_session: AsyncSession, data: schemas.PersonalTokenCreate
    ) -> schemas.PersonalToken:
        user = await db_session.get(User, principal.id)
        if user is None:  # pragma: no cover - the principal was just loaded
            raise NotFoundError("User not found")
        scopes = data.scopes if data.scopes is not None else sorted(principal.scopes)
        token, raw = await tokens.create_personal(
            user, data.name, scopes, data.expires_in_days, within=principal.scopes
        )
        out = tokens.to_schema(token, schema_type=schemas.PersonalToken)
        out.token = raw
        return out

    @get("/{token_id:uuid}", summary="Get one of my tokens")
    async def get_token(self, tokens: TokenService, principal: Principal, token_id: UUID) -> schemas.PersonalToken:
        return tokens.to_schema(await tokens.get_personal(principal.id, token_id), schema_type=schemas.PersonalToken)

    @delete("/{token_id:uuid}", summary="Revoke one of my tokens")
    async def revoke_token(self, tokens: TokenService, principal: Principal, token_id: UUID) -> None:
        await tokens.revoke_personal(principal.id, token_id)
