"""The browser pages (HTMX), served from ``/``."""

from __future__ import annotations

from advanced_alchemy.exceptions import RepositoryError
from litestar import Router
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.htmx import HTMXRequest

from app.web.account import PasswordController, SessionController
from app.web.admin import OrganizationPages
from app.web.audit import AuditPages
from app.web.auth import WebSessionAuthMiddleware
from app.web.blast_compose import BlastComposePages
from app.web.blasts import BlastPages
from app.web.categories import CategoryPages
from app.web.chains import ChainPages
from app.web.clients import ClientPages
from app.web.common import add_vary, provide_page_number, provide_web_principal
from app.web.contacts import ContactPages
from app.web.conversations import ConversationPages
from app.web.errors import web_exception_handler
from app.web.messages import MessagePages
from app.web.organization import SettingsPages
from app.web.services import ServicePages
from app.web.tokens import TokenPages
from app.web.users import UserPages
from app.web.webhooks import WebhookPages

WEB_CONTROLLERS: list[type] = [
    SessionController,
    PasswordController,
    OrganizationPages,
    UserPages,
    ClientPages,
    TokenPages,
    ContactPages,
    ConversationPages,
    CategoryPages,
    ServicePages,
    ChainPages,
    MessagePages,
    BlastComposePages,
    BlastPages,
    SettingsPages,
    WebhookPages,
    AuditPages,
]


def make_web_router() -> Router:
    return Router(
        path="/",
        route_handlers=WEB_CONTROLLERS,
        include_in_schema=False,
        request_class=HTMXRequest,
        middleware=[DefineMiddleware(WebSessionAuthMiddleware)],
        dependencies={
            "principal": Provide(provide_web_principal, sync_to_thread=False),
            "page_number": Provide(provide_page_number, sync_to_thread=False),
        },
        after_request=add_vary,
        # The SQLAlchemy plugin registers an app-level handler for RepositoryError (NotFoundError...),
        # which would win over the app's generic one: pages must answer with pages.
        exception_handlers={RepositoryError: web_exception_handler},
    )
