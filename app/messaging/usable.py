"""Whether a service can carry a message: decided here, and only here.

The coordinator asks :func:`unusable` before it hands an attempt to a worker (a service that cannot carry
it is recorded as a failed attempt and the chain moves on); the send job asks :func:`plugin_here` on the
worker that runs it (its own registry may have blacklisted the plugin since).
"""

from __future__ import annotations

from typing import Any, Protocol

from app.contacts.models import Contact
from app.plugins.base import Plugin
from app.servicehost.registry import PluginRegistry


class HasCredentials(Protocol):
    """Whether the organization has credentials for a service (``CredentialService``, or a cache of it)."""

    async def has(self, name: str) -> bool: ...


def plugin_here(registry: PluginRegistry, name: str, where: str = "on this worker") -> Plugin | str:
    """The plugin of service ``name`` in this process, or why there is none."""
    plugin = registry.get(name)
    if plugin is None:
        return f"blacklisted: not available {where}"
    return plugin


async def unusable(
    name: str,
    *,
    statuses: dict[str, Any],
    registry: PluginRegistry,
    credentials: HasCredentials,
    contact: Contact,
    content: str,
) -> str | None:
    """Why service ``name`` cannot carry ``content`` to ``contact`` for the credentials' organization, or
    None. ``statuses`` are the recorded health checks (``service_statuses``)."""
    status = statuses.get(name)
    if status is None:
        return "unknown_service: not installed"
    if status.status != "available":
        return f"blacklisted: {status.reason or 'failed its health check'}"
    plugin = plugin_here(registry, name, "in this process")
    if isinstance(plugin, str):
        return plugin
    info = plugin.info
    if info.credentials_type is not None and not await credentials.has(name):
        return "no_credentials: this organization has no credentials for the service"
    if info.address_field is not None and not getattr(contact, info.address_field, None):
        return f"no_address: the contact has no {info.address_field}"
    if info.max_length is not None and len(content) > info.max_length:
        return f"too_long: the service takes at most {info.max_length} characters"
    return None
