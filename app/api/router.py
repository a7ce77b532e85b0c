"""The ``/api/v1`` router: bearer authentication, problem details, pagination."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware

from app.api.accounts import (
    ApiClientController,
    MeController,
    OrganizationController,
    TokenController,
    UserController,
)
from app.api.audit import AuditController
from app.api.blasts import BlastController
from app.api.contacts import CategoryController, ContactController
from app.api.deps import provide_limit_offset, provide_principal
from app.api.errors import api_exception_handler
from app.api.messaging import ConversationController, MessageController, ServicechainController
from app.api.organization import OwnOrganizationController
from app.api.services import ServiceController
from app.api.stats import StatsController
from app.api.webhooks import WebhookController
from app.tenants.auth import BearerAuthMiddleware
from app.tenants.request_limits import RequestLimitMiddleware

API_CONTROLLERS = [MeController, OrganizationController, OwnOrganizationController]
API_CONTROLLERS += [UserController, ApiClientController, TokenController]
API_CONTROLLERS += [ContactController, CategoryController]
API_CONTROLLERS += [ServicechainController, MessageController, ConversationController]
API_CONTROLLERS += [ServiceController, AuditController, StatsController]
API_CONTROLLERS += [WebhookController, BlastController]


def make_api_router() -> Router:
    return Router(
        path="/api/v1",
        route_handlers=API_CONTROLLERS,
        # API rate limits (app/tenants/request_limits.py) around the authentication: refusals (401) per
        # client IP before it, the budget of the principal's token or client after it
        middleware=[
            DefineMiddleware(RequestLimitMiddleware, kind="refused"),
            DefineMiddleware(BearerAuthMiddleware),
            DefineMiddleware(RequestLimitMiddleware),
        ],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "limit_offset": Provide(provide_limit_offset, sync_to_thread=False),
        },
        exception_handlers={Exception: api_exception_handler},
        security=[{"BearerToken": []}],
    )
