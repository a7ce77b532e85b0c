"""Every user's page: personal access tokens for the REST API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.config import Settings
from app.errors import Forbidden
from app.tenants.deps import service
from app.tenants.guards import requires_principal
from app.tenants.principal import ALL_SCOPES, ROLE_SCOPES, Principal
from app.tenants.services import AccountService, TokenService
from app.web.common import FormErrors, ListView, catching, done, no_store, page, read_form, text
from app.web.forms import TOKEN_EXPIRY_CHOICES, check_name, chosen_scopes, expiry_days

LIST_URL = "/tokens"
LIST = ListView(
    url=LIST_URL,
    target="token-list",
    name="tokens",
    template="tokens/list.html",
    fragment="partials/_token_table.html",
    form={},
)


def allowed_scopes(principal: Principal) -> list[str]:
    return [s for s in ALL_SCOPES if s in ROLE_SCOPES[principal.role]]


class TokenPages(Controller):
    path = LIST_URL
    guards = [requires_principal]
    dependencies = {"tokens": service(TokenService)}

    async def _list(
        self, request: HTMXRequest, tokens: TokenService, principal: Principal, number: int, **kwargs: Any
    ) -> Response[Any]:
        scopes = allowed_scopes(principal)
        kwargs["form"] = kwargs.get("form") or {"name": "", "scopes": scopes, "expires_in_days": "90"}
        context: dict[str, Any] = {"scopes": scopes, "expiry_choices": TOKEN_EXPIRY_CHOICES, "now": utcnow()}
        return await LIST.render(request, tokens, number, *tokens.for_user(principal.id), **context, **kwargs)

    @get("/", name="tokens")
    async def list_tokens(
        self, request: HTMXRequest, tokens: TokenService, principal: Principal, page_number: int
    ) -> Response[Any]:
        return await self._list(request, tokens, principal, page_number)

    @post("/")
    async def create_token(
        self,
        request: HTMXRequest,
        tokens: TokenService,
        principal: Principal,
        db_session: AsyncSession,
        settings: Settings,
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        name = text(form, "name", 400)
        check_name(name, errors, what="a name that says what the token is for")
        scopes = chosen_scopes(form, allowed_scopes(principal), errors)
        days = expiry_days(form, errors)
        if not errors:
            user = await AccountService(session=db_session).get(principal.id)
            async with catching(errors, "scopes", also=(Forbidden,)):
                token, raw = await tokens.create_personal(user, name, scopes, days)
            if not errors:
                context = {"token": token, "raw": raw, "api_url": f"{settings.server.public_url}/api/v1/me"}
                return no_store(page("tokens/created.html", context, status=201))
        shown = {"name": name, "scopes": scopes, "expires_in_days": text(form, "expires_in_days")}
        return await self._list(request, tokens, principal, 1, form=shown, errors=errors, status=422)

    @post("/{token_id:uuid}/revoke")
    async def revoke_token(
        self,
        request: HTMXRequest,
        token_id: UUID,
        tokens: TokenService,
        principal: Principal,
        db_session: AsyncSession,
    ) -> Response[Any]:
        token = await tokens.revoke_personal(principal.id, token_id)
        context = {"token": token, "now": utcnow()}
        message = f"Token “{token.name}” is revoked."
        return await done(request, db_session, message, LIST_URL, "partials/_token_row.html", context)
