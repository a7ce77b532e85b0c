"""What an organization's provider hooks look like from the outside, for the API and the pages.

* :func:`telegram_bot` — the bot the organization's Telegram credentials registered (its username and
  the webhook given to ``setWebhook``), read from the stored credentials;
* :func:`telegram_link_for` — a contact's ``https://t.me/<bot>?start=<token>`` (decision 0024), or None
  while the organization has no Telegram bot with a known username;
* :func:`twilio_hook_url` — the URL to paste into Twilio's console ("A message comes in").

The one place that decrypts the Telegram credentials for this: the API's answers about one contact
(:func:`contact_detail`), the contact page and the services page all call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.contacts.links import link_token, telegram_link
from app.contacts.models import Contact
from app.contacts.schemas import ContactDetail
from app.contacts.services import ContactService
from app.logging import get_logger
from app.plugins import telegram, twilio
from app.plugins.base import PluginError
from app.servicehost.registry import PluginRegistry
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped

log = get_logger(__name__)


@dataclass(frozen=True)
class TelegramBot:
    """The organization's bot as its stored credentials know it (never the token or the secret)."""

    username: str | None
    webhook_url: str | None


async def telegram_bot(
    session: AsyncSession, settings: Settings, organization_id: UUID, *, registry: PluginRegistry | None = None
) -> TelegramBot | None:
    """The organization's Telegram bot, or None without (usable) Telegram credentials."""
    credentials = scoped(CredentialService, session, organization_id, settings=settings, registry=registry)
    try:
        stored = await credentials.get_decrypted(telegram.NAME)
    except PluginError as exc:  # undecryptable, or the plugin is not loaded: no bot to offer
        log.warning("telegram credentials unusable", organization_id=str(organization_id), error=str(exc))
        return None
    if not isinstance(stored, telegram.TelegramCredentials):
        return None
    return TelegramBot(username=stored.bot_username, webhook_url=stored.webhook_url)


async def telegram_link_for(
    session: AsyncSession,
    settings: Settings,
    organization_id: UUID,
    contact_id: UUID,
    *,
    registry: PluginRegistry | None = None,
) -> str | None:
    """``https://t.me/<bot username>?start=<token>`` for one contact; None without a bot username."""
    bot = await telegram_bot(session, settings, organization_id, registry=registry)
    if bot is None or not bot.username:
        return None
    return telegram_link(bot.username, link_token(settings.security.secret_key, organization_id, contact_id))


async def contact_detail(contacts: ContactService, settings: Settings, contact: Contact) -> ContactDetail:
    """One contact as the API answers it (create, get, update, opt-out/in): with its Telegram link."""
    out = contacts.to_schema(contact, schema_type=ContactDetail)
    session = contacts.repository.session
    link = await telegram_link_for(session, settings, contacts.organization_id, contact.id)
    return msgspec.structs.replace(out, telegram_link=link)


def twilio_hook_url(settings: Settings, organization_id: UUID) -> str:
    """Where Twilio posts this organization's incoming SMS and status callbacks."""
    return twilio.hook_url(settings.server.public_url, organization_id)
