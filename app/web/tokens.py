"""Every user's page: personal access tokens for the REST API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.config import Settings
from app.errors import Forbidden, ValidationProblem
from app.tenants.guards import requires_principal
from app.tenants.principal import ALL_SCOPES, ROLE_SCOPES, Principal
from app.tenants.services import AccountService, TokenService
from app.web.common import (
    NEWEST,
    FormErrors,
    Page,
    limit_offset,
    no_store,
    page,
    provide_page_number,
    read_form,
    see_other,
    text,
    wants_fragment,
)
from app.web.forms import TOKEN_EXPIRY_CHOICES, check_name, chosen_scopes, expiry_days

LIST_URL = "/tokens"


def provide_tokens(db_session: AsyncSession) -> TokenService:
    return TokenService(session=db_session)


def allowed_scopes(principal: Principal) -> list[str]:
    return [s for s in ALL_SCOPES if s in ROLE_SCOPES[principal.role]]


class TokenPages(Controller):
    path = LIST_URL
    guards = [requires_principal]
    dependencies = {
        "tokens": Provide(provide_tokens, sync_to_thread=False),
        "page_number": Provide(provide_page_number, sync_to_thread=False),
    }

    async def _list_page(
        self,
        request: HTMXRequest,
        tokens: TokenService,
        principal: Principal,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        items, total = await tokens.list_and_count(*tokens.for_user(principal.id), limit_offset(page_number), NEWEST)
        listing = Page(items=items, total=total, number=page_number, url=LIST_URL, target="token-list")
        scopes = allowed_scopes(principal)
        context = {
            "tokens": listing,
            "scopes": scopes,
            "expiry_choices": TOKEN_EXPIRY_CHOICES,
            "form": form or {"name": "", "scopes": scopes, "expires_in_days": "90"},
            "errors": errors or FormErrors(),
            "now": utcnow(),
        }
        if wants_fragment(request, "token-list"):
            return page("partials/_token_table.html", context)
        return page("tokens/list.html", context, status=status)

    @get("/", name="tokens")
    async def list_tokens(
        self, request: HTMXRequest, tokens: TokenService, principal: Principal, page_number: int
    ) -> Response[Any]:
        return await self._list_page(request, tokens, principal, page_number)

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
            try:
                token, raw = await tokens.create_personal(user, name, scopes, days)
            except (ValidationProblem, Forbidden) as exc:
                errors.add("scopes", getattr(exc, "detail", None) or str(exc))
            else:
                context = {"token": token, "raw": raw, "api_url": f"{settings.server.public_url}/api/v1/me"}
                return no_store(page("tokens/created.html", context, status=201))
        form_state = {"name": name, "scopes": scopes, "expires_in_days": text(form, "expires_in_days")}
        return await self._list_page(request, tokens, principal, 1, form=form_state, errors=errors, status=422)

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
        flash(request, f"Token “{token.name}” is revoked.", "success")
        if wants_fragment(request):
            await db_session.commit()
            return page("partials/_token_row.html", {"token": token, "now": utcnow(), "oob_flashes": True})
        return await see_other(db_session, LIST_URL)
