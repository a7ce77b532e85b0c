"""Pages of one's own account: sign in and out, the dashboard, signed-in sessions, password reset and change."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.params import Parameter
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldErrors, ValidationProblem
from app.tenants import flows
from app.tenants.deps import service
from app.tenants.guards import requires_principal
from app.tenants.principal import Principal
from app.tenants.ratelimit import RateLimit
from app.tenants.request_limits import RequestLimitMiddleware
from app.tenants.services import AccountService, PasswordResetService
from app.tenants.sessions import WebSessionService, describe_agent
from app.tenants.throttle import LoginThrottle
from app.web.auth import (
    client_ip,
    current_principal,
    end_session,
    provide_reset_limit,
    provide_throttle,
    start_session,
)
from app.web.common import (
    FormErrors,
    done,
    page,
    read_form,
    safe_local_path,
    secret_text,
    see_other,
    text,
    wants_fragment,
)
from app.web.dashboard import STATS_TARGET, dashboard_stats

NEUTRAL_RESET_ANSWER = "If an account exists for that address, a link to reset its password is on its way."


ACCOUNT_SERVICES = {
    "throttle": Provide(provide_throttle, sync_to_thread=False),
    "accounts": service(AccountService),
    "web_sessions": service(WebSessionService),
    "resets": service(PasswordResetService),
}


class SessionController(Controller):
    """Sign in, sign out and the dashboard."""

    dependencies = ACCOUNT_SERVICES

    @get("/login", name="login")
    async def login_page(
        self, request: HTMXRequest, next_url: str | None = Parameter(query="next", default=None, required=False)
    ) -> Response[Any]:
        if current_principal(request) is not None:
            return Redirect(safe_local_path(next_url), status_code=303)
        return page("auth/login.html", {"next": safe_local_path(next_url, ""), "email": "", "errors": FormErrors()})

    @post("/login", middleware=[DefineMiddleware(RequestLimitMiddleware, kind="login")])  # per client IP
    async def login(
        self, request: HTMXRequest, db_session: AsyncSession, throttle: LoginThrottle, accounts: AccountService
    ) -> Response[Any]:
        form = await read_form(request)
        email = text(form, "email", 320)
        password = secret_text(form, "password")
        next_url = safe_local_path(text(form, "next"), "")
        errors = FormErrors()
        context: dict[str, Any] = {"next": next_url, "email": email, "errors": errors}
        if not email or not password:
            if not email:
                errors.add("email", "Enter your email address.")
            if not password:
                errors.add("password", "Enter your password.")
            return page("auth/login.html", context, status=400)
        try:
            user = await flows.login(accounts, throttle, email, password, client_ip(request))
        except flows.LoginThrottled as exc:
            errors.add(None, str(exc))
            return page("auth/login.html", context, status=429, headers={"Retry-After": str(exc.retry_after)})
        except flows.LoginRefused:
            errors.add(None, "Wrong email or password.")
            return page("auth/login.html", context, status=400)
        except flows.OrganizationSuspended as exc:
            errors.add(None, str(exc))
            return page("auth/login.html", context, status=403)
        await start_session(request, db_session, user)
        return await see_other(db_session, next_url or "/")

    @post("/logout", name="logout")
    async def logout(self, request: HTMXRequest, db_session: AsyncSession) -> Response[Any]:
        return await _signed_out(request, db_session, "You are signed out.")

    @get("/account/sessions", name="sessions", guards=[requires_principal])
    async def sessions_page(self, principal: Principal, web_sessions: WebSessionService) -> Template:
        live = await web_sessions.live_of(principal.id)
        rows = [(web, describe_agent(web.user_agent)) for web in live]
        return page("auth/sessions.html", {"rows": rows, "current": principal.session_id})

    @post("/account/sessions/{session_id:uuid}/end", guards=[requires_principal])
    async def end_one_session(
        self,
        request: HTMXRequest,
        session_id: UUID,
        principal: Principal,
        db_session: AsyncSession,
        web_sessions: WebSessionService,
    ) -> Response[Any]:
        web = await web_sessions.end_one(principal.id, session_id)
        if web.id == principal.session_id:
            return await _signed_out(request, db_session, "You are signed out.")
        message = f"{describe_agent(web.user_agent)} ({web.ip}) is signed out."
        return await done(request, db_session, message, "/account/sessions")

    @post("/account/sessions/end-all", guards=[requires_principal])
    async def end_all_sessions(
        self, request: HTMXRequest, principal: Principal, db_session: AsyncSession, web_sessions: WebSessionService
    ) -> Response[Any]:
        count = await web_sessions.end_all(principal.id)
        noun = "session" if count == 1 else "sessions"
        return await _signed_out(request, db_session, f"You are signed out everywhere ({count} {noun} ended).")

    @get("/", name="dashboard", guards=[requires_principal])
    async def dashboard(self, request: HTMXRequest, principal: Principal, db_session: AsyncSession) -> Response[Any]:
        """The counts, and (with ``messages:read``) the messaging figures of :mod:`app.messaging.stats`,
        whose block (``#dashboard-stats``) updates itself, answered 304 while nothing changed."""
        stats: dict[str, Any] = {}
        if principal.has_scope("messages:read"):
            found = await dashboard_stats(request, db_session, principal)
            if isinstance(found, Response):
                return found
            if wants_fragment(request, STATS_TARGET):
                return page("partials/_dashboard_stats.html", found)
            stats = found
        org, counts = await flows.home_counts(db_session, principal)
        return page("dashboard.html", {"org": org, "counts": counts, **stats})


async def _signed_out(request: HTMXRequest, db_session: AsyncSession, message: str) -> Response[Any]:
    await end_session(request, db_session)  # ended on the server: a copied cookie is worthless
    flash(request, message, "success")
    return await see_other(db_session, "/login")


class PasswordController(Controller):
    """Forgotten password (request a link, use it) and changing one's own password."""

    dependencies = ACCOUNT_SERVICES

    @get("/forgot-password", name="forgot-password")
    async def forgot_page(self) -> Template:
        return page("auth/forgot_password.html", {"email": "", "sent": False, "errors": FormErrors()})

    @post("/forgot-password", dependencies={"limit": Provide(provide_reset_limit, sync_to_thread=False)})
    async def forgot(self, request: HTMXRequest, accounts: AccountService, queue: Queue, limit: RateLimit) -> Template:
        form = await read_form(request)
        email = text(form, "email", 320)
        errors = FormErrors()
        context = {"email": email, "sent": False, "errors": errors}
        if "@" not in email:
            errors.add("email", "Enter the email address you sign in with.")
            return page("auth/forgot_password.html", context, status=422)
        try:
            await flows.request_password_reset(accounts, queue, email, limit=limit, ip=client_ip(request))
        except flows.ResetThrottled as exc:
            errors.add(None, str(exc))
            return page("auth/forgot_password.html", context, status=429, headers={"Retry-After": str(exc.retry_after)})
        return page("auth/forgot_password.html", {**context, "sent": True})

    @get("/reset-password/{token:str}", name="reset-password")
    async def reset_page(self, token: str, resets: PasswordResetService) -> Template:
        valid = await resets.valid(token)
        context = {"token": token, "valid": valid is not None, "errors": FormErrors()}
        return page("auth/reset_password.html", context, status=200 if valid else 400, headers=_NO_REFERRER)

    @post("/reset-password/{token:str}")
    async def reset(
        self,
        request: HTMXRequest,
        token: str,
        db_session: AsyncSession,
        resets: PasswordResetService,
        accounts: AccountService,
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        context: dict[str, Any] = {"token": token, "valid": True, "errors": errors}
        if await resets.valid(token) is None:
            context["valid"] = False
            return page("auth/reset_password.html", context, status=400, headers=_NO_REFERRER)
        new, confirm = secret_text(form, "new_password"), secret_text(form, "confirm_password")
        for name, problem in flows.new_password_problems(new, confirm).items():
            errors.add(name, problem)
        if errors:
            return page("auth/reset_password.html", context, status=422, headers=_NO_REFERRER)
        try:
            user = await resets.consume(token, new, accounts)
        except ValidationProblem as exc:
            errors.add("new_password", exc.detail)
            return page("auth/reset_password.html", context, status=422, headers=_NO_REFERRER)
        if user is None:  # used or expired in the meantime
            context["valid"] = False
            return page("auth/reset_password.html", context, status=400, headers=_NO_REFERRER)
        await end_session(request, db_session)  # the user's sessions ended with the reset; so does this browser's
        flash(request, "Your password has been changed. Sign in with your new password.", "success")
        return await see_other(db_session, "/login")

    @get("/account/password", name="change-password", guards=[requires_principal])
    async def change_page(self) -> Template:
        return page("auth/change_password.html", {"errors": FormErrors()})

    @post("/account/password", guards=[requires_principal])
    async def change(
        self,
        request: HTMXRequest,
        principal: Principal,
        db_session: AsyncSession,
        throttle: LoginThrottle,
        accounts: AccountService,
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        context = {"errors": errors}
        try:
            user = await flows.change_password(
                accounts,
                throttle,
                principal.id,
                secret_text(form, "current_password"),
                secret_text(form, "new_password"),
                secret_text(form, "confirm_password"),
                client_ip(request),
            )  # ends every session of the user, this one included...
        except flows.PasswordChangeThrottled as exc:
            errors.add(None, str(exc))
            headers = {"Retry-After": str(exc.retry_after)}
            return page("auth/change_password.html", context, status=429, headers=headers)
        except flows.WrongPassword as exc:
            errors.add("current_password", str(exc))
            return page("auth/change_password.html", context, status=400)
        except FieldErrors as exc:
            errors.take(exc)
            return page("auth/change_password.html", context, status=422)
        await start_session(request, db_session, user)  # ...which continues under a new id
        flash(
            request, "Your password has been changed. Other browsers signed in as you have been signed out.", "success"
        )
        return await see_other(db_session, "/account/password")


_NO_REFERRER = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
