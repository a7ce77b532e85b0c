"""Provider callbacks: ``POST /hooks/{service}/{organization_id}``, verified and applied.

The plugin verifies the provider's signature with that organization's credentials and parses the
request into receipts, inbound messages and links; this module applies each through the messaging
domain (:mod:`app.messaging.receipts`, :mod:`app.messaging.inbound`). An unknown service, or an
organization without credentials for it, is 404; a bad or missing signature is 403 and changes
nothing; a body the plugin cannot read is 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.config import Settings
from app.errors import BadRequest, Forbidden, NotFound, RequestTooLarge
from app.logging import get_logger
from app.messaging.coordinator import Coordinator
from app.messaging.inbound import apply_inbound, apply_link
from app.messaging.receipts import apply_receipt, replay_later
from app.plugins.base import Inbound, Link, PayloadError, PluginError, Receipt, SignatureError, WebhookRequest
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped

log = get_logger(__name__)

#: the largest callback body read (Twilio and Telegram send a few KiB at most)
MAX_HOOK_BODY = 64 * 1024


@dataclass(frozen=True)
class HookAnswer:
    """What the provider is answered (Twilio wants TwiML, Telegram anything 2xx)."""

    body: bytes = b""
    media_type: str = "text/plain"


async def receive_hook(
    session: AsyncSession,
    coordinator: Coordinator,
    settings: Settings,
    service: str,
    organization_id: UUID,
    request: WebhookRequest,
) -> HookAnswer:
    plugin = coordinator.registry.get(service)
    if plugin is None or plugin.info.credentials_type is None:
        raise NotFound("No such service.")
    credentials = await scoped(
        CredentialService, session, organization_id, settings=settings, registry=coordinator.registry
    ).get_decrypted(service)
    if credentials is None:  # also another organization's id that does not exist
        raise NotFound("This organization has no credentials for this service.")
    await session.rollback()  # end the read before the plugin works (no transaction held open)
    try:
        items = await plugin.parse_webhook(request, credentials)
    except SignatureError as exc:
        log.warning("hook signature refused", service=service, organization_id=str(organization_id))
        raise Forbidden(str(exc) or "The signature of this callback did not verify.") from None
    except PayloadError as exc:
        error = RequestTooLarge if exc.status_code == 413 else BadRequest
        raise error(str(exc) or "This callback could not be read.") from None
    except PluginError as exc:
        raise BadRequest(str(exc) or "This callback could not be read.") from None
    for item in items:
        await apply_item(session, coordinator, settings, service, organization_id, item)
    return HookAnswer(plugin.info.webhook_answer, plugin.info.webhook_answer_type)


async def apply_item(
    session: AsyncSession,
    coordinator: Coordinator,
    settings: Settings,
    service: str,
    organization_id: UUID,
    item: object,
) -> None:
    """One parsed item, in its own transaction (one bad item does not undo the others)."""
    plugin = coordinator.registry.get(service)
    if isinstance(item, Receipt):
        outcome = await apply_receipt(session, coordinator, organization_id, service, item)
        metrics.receipt_applied(service, outcome)
        log.info("receipt", service=service, provider_id=item.provider_message_id, state=item.state, outcome=outcome)
        if outcome == "unknown":
            await replay_later(coordinator, organization_id, service, item)
    elif isinstance(item, Inbound) and plugin is not None and plugin.info.address_field is not None:
        await apply_inbound(session, organization_id, service, plugin.info.address_field, item)
    elif isinstance(item, Link) and plugin is not None and plugin.info.address_field == "telegram_chat_id":
        await apply_link(session, organization_id, settings.security.secret_key, item.token, item.address)
    else:
        log.warning("hook item ignored", service=service, item=type(item).__name__)
