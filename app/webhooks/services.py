"""Webhook endpoints of one organization, their secrets and their delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import aware, utcnow
from app.config import Settings
from app.db.scoping import OrgScopedRepository, OrgScopedService
from app.errors import ValidationProblem
from app.plugins.base import CredentialsError
from app.plugins.crypto import CredentialCipher, CredentialsUnavailable
from app.plugins.httpapi import check_url
from app.plugins.netguard import ensure_public_url
from app.webhooks import schemas, signing
from app.webhooks.models import (
    EVENT_TYPES,
    PING,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

#: how long the secret before a rotation keeps signing beside the new one
ROTATION_OVERLAP = timedelta(hours=24)


class EndpointRepository(OrgScopedRepository[WebhookEndpoint]):
    model_type = WebhookEndpoint


class DeliveryRepository(OrgScopedRepository[WebhookDelivery]):
    model_type = WebhookDelivery


def _cipher_name(endpoint_id: UUID) -> str:
    return f"webhook:{endpoint_id}"


class WebhookSecrets:
    """Encrypts and reads the secrets of endpoints (bound to their organization and endpoint)."""

    def __init__(self, settings: Settings) -> None:
        self.cipher = CredentialCipher(settings.security)

    def seal(self, endpoint: WebhookEndpoint, secret: str) -> str:
        return self.cipher.encrypt(endpoint.organization_id, _cipher_name(endpoint.id), secret)

    def signing_keys(self, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
        """The secrets that sign a delivery at ``now``: the current one, and the previous one for 24 h."""
        try:
            keys = [self.cipher.decrypt(endpoint.organization_id, _cipher_name(endpoint.id), endpoint.secret_encrypted)]
            expires = aware(endpoint.previous_secret_expires_at)
            if endpoint.previous_secret_encrypted and expires is not None and expires > now:
                name = _cipher_name(endpoint.id)
                keys.append(self.cipher.decrypt(endpoint.organization_id, name, endpoint.previous_secret_encrypted))
        except CredentialsUnavailable as exc:
            raise CredentialsUnavailable("The webhook secret cannot be decrypted; rotate it.") from exc
        return [str(k) for k in keys]


class WebhookService(OrgScopedService[WebhookEndpoint]):
    repository_type = EndpointRepository

    def __init__(self, session: AsyncSession, organization_id: UUID, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(session=session, organization_id=organization_id, **kwargs)
        self.settings = settings
        self.secrets = WebhookSecrets(settings)
        self.deliveries = DeliveryRepository(session=session, organization_id=organization_id)

    async def _check_url(self, url: str) -> str:
        url = url.strip()
        try:
            check_url(url)
            await ensure_public_url(url, self.settings.security.allow_private_targets)
        except CredentialsError as exc:
            raise ValidationProblem(str(exc), "url") from exc
        return url

    async def create_endpoint(self, data: schemas.WebhookCreate) -> tuple[WebhookEndpoint, str]:
        """A new endpoint and its secret (returned this once)."""
        endpoint = WebhookEndpoint(
            id=uuid4(),
            organization_id=self.organization_id,
            url=await self._check_url(data.url),
            description=data.description,
            event_types=list(data.event_types) if data.event_types else list(EVENT_TYPES),
            enabled=data.enabled,
        )
        secret = signing.new_secret()
        endpoint.secret_encrypted = self.secrets.seal(endpoint, secret)
        return await self.repository.add(endpoint), secret

    async def update_endpoint(self, endpoint_id: UUID, data: schemas.WebhookUpdate) -> WebhookEndpoint:
        endpoint = await self.get(endpoint_id)
        if isinstance(data.url, str):
            endpoint.url = await self._check_url(data.url)
        if isinstance(data.event_types, list):
            endpoint.event_types = list(dict.fromkeys(data.event_types))
        if isinstance(data.description, str):
            endpoint.description = data.description
        if isinstance(data.enabled, bool):
            if data.enabled and not endpoint.enabled:  # an admin turning it back on starts afresh
                endpoint.disabled_reason = None
                endpoint.failing_since = None
            endpoint.enabled = data.enabled
        return await self.repository.update(endpoint)

    async def rotate_secret(self, endpoint_id: UUID, now: datetime | None = None) -> tuple[WebhookEndpoint, str]:
        """A new secret; the old one keeps signing beside it for :data:`ROTATION_OVERLAP`."""
        endpoint = await self.get(endpoint_id)
        secret = signing.new_secret()
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = (now or utcnow()) + ROTATION_OVERLAP
        endpoint.secret_encrypted = self.secrets.seal(endpoint, secret)
        return await self.repository.update(endpoint), secret

    async def remove(self, endpoint_id: UUID) -> None:
        await self.delete(endpoint_id)

    # ------------------------------------------------------------ the delivery log

    async def list_deliveries(
        self,
        endpoint_id: UUID,
        page: LimitOffset,
        *,
        event_type: str | None = None,
        status: DeliveryStatus | None = None,
    ) -> tuple[list[WebhookDelivery], int, dict[UUID, list[WebhookAttempt]]]:
        """The endpoint's deliveries, newest first, with the attempts of each (oldest first)."""
        await self.get(endpoint_id)
        conditions: list[Any] = [WebhookDelivery.endpoint_id == endpoint_id]
        if event_type:
            conditions.append(WebhookDelivery.event_type == event_type)
        if status is not None:
            conditions.append(WebhookDelivery.status == status)
        base = self.deliveries.statement.where(*conditions)
        total = await self.repository.session.scalar(select(func.count()).select_from(base.subquery())) or 0
        rows = list(
            await self.repository.session.scalars(
                base.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                .limit(page.limit)
                .offset(page.offset)
            )
        )
        return rows, int(total), await self._attempts([d.id for d in rows])

    async def _attempts(self, delivery_ids: Sequence[UUID]) -> dict[UUID, list[WebhookAttempt]]:
        out: dict[UUID, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
        if delivery_ids:
            attempts = await self.repository.session.scalars(
                select(WebhookAttempt)
                .where(
                    WebhookAttempt.organization_id == self.organization_id,
                    WebhookAttempt.delivery_id.in_(list(delivery_ids)),
                )
                .order_by(WebhookAttempt.attempted_at, WebhookAttempt.created_at)
            )
            for attempt in attempts:
                out[attempt.delivery_id].append(attempt)
        return out

    async def get_delivery(self, endpoint_id: UUID, delivery_id: UUID) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
        delivery = await self.deliveries.get_one_or_none(
            WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
        )
        if delivery is None:
            raise NotFoundError("No such delivery.")
        return delivery, (await self._attempts([delivery.id]))[delivery.id]

    async def retry(self, endpoint_id: UUID, delivery_id: UUID, now: datetime | None = None) -> WebhookDelivery:
        """Replay one delivery: due at once, whatever its status (the dispatcher sends it)."""
        endpoint = await self.get(endpoint_id)
        delivery, _ = await self.get_delivery(endpoint_id, delivery_id)
        if not endpoint.enabled:
            raise ValidationProblem("The endpoint is disabled; enable it before replaying a delivery.", "enabled")
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now or utcnow()
        return await self.deliveries.update(delivery)

    async def ping(self, endpoint_id: UUID, now: datetime | None = None) -> WebhookDelivery:
        """A ``ping`` event for this endpoint only, due at once."""
        endpoint = await self.get(endpoint_id)
        if not endpoint.enabled:
            raise ValidationProblem("The endpoint is disabled; enable it before testing it.", "enabled")
        now = now or utcnow()
        event = WebhookEvent(
            id=uuid4(),
            organization_id=self.organization_id,
            type=PING,
            payload={"endpoint_id": str(endpoint.id)},
            dispatched_at=now,  # fanned out here, to this endpoint alone
        )
        self.repository.session.add(event)
        await self.repository.session.flush()  # the event first: the delivery references it
        delivery = WebhookDelivery(event_id=event.id, endpoint_id=endpoint.id, event_type=PING, next_attempt_at=now)
        return await self.deliveries.add(delivery)
