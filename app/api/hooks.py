"""``POST /hooks/{service}/{organization_id}``: providers' receipts and inbound messages.

No bearer token: the provider signs the request, and the plugin checks that signature with the
organization's credentials (:mod:`app.messaging.hooks`). The URL checked is the one the provider
called, ``VOLUBLE_PUBLIC_URL`` + path + query, so it holds behind a proxy.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, Response, Router, post
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.documented_errors import problem_responses
from app.config import Settings
from app.messaging.coordinator import Coordinator
from app.messaging.hooks import MAX_HOOK_BODY, receive_hook
from app.plugins.base import WebhookRequest


def _as_called(request: Request[Any, Any, Any], settings: Settings) -> str:
    query = request.scope.get("query_string", b"").decode("latin-1")
    return settings.server.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


@post(
    "/hooks/{service:str}/{organization_id:uuid}",
    status_code=200,
    request_max_body_size=MAX_HOOK_BODY,
    summary="A provider's callback (receipts, inbound messages); signed by the provider",
    tags=["hooks"],
    security=[],
    responses=problem_responses(
        {
            400: "A body the plugin cannot read.",
            403: "The provider's signature does not verify with the organization's credentials.",
            404: "No such service, or the organization has no credentials for it.",
            413: "The body is larger than a provider sends.",
        }
    ),
)
async def provider_hook(
    request: Request[Any, Any, Any],
    service: str,
    organization_id: UUID,
    db_session: AsyncSession,
    settings: Settings,
    coordinator: Coordinator,
) -> Response[bytes]:
    body = await request.body()
    hook = WebhookRequest(
        method=request.method,
        url=_as_called(request, settings),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
    )
    answer = await receive_hook(db_session, coordinator, settings, service, organization_id, hook)
    return Response(answer.body, media_type=answer.media_type, status_code=200)


def make_hooks_router() -> Router:
    return Router(path="/", route_handlers=[provider_hook])
