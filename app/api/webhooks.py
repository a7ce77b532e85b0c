"""REST controller of ``/webhooks``: an organization's status webhook endpoints and their delivery log
(org admins)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter

from app.tenants.deps import org_service
from app.tenants.guards import requires_org_admin, requires_organization
from app.webhooks import schemas
from app.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.services import WebhookService

ID = "/{webhook_id:uuid}"
EventTypeFilter = Annotated[schemas.EventType | None, Parameter(description="Only deliveries of this event type")]
StatusFilter = Annotated[DeliveryStatus | None, Parameter(description="Only deliveries in this status")]


def webhook_out(endpoint: WebhookEndpoint, secret: str | None = None) -> schemas.Webhook:
    out = msgspec.convert(endpoint, schemas.Webhook, from_attributes=True)
    if secret is not None:
        out.secret = secret
    return out


def delivery_out(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> schemas.Delivery:
    out = msgspec.convert(
        {
            **{
                f: getattr(delivery, f)
                for f in schemas.Delivery.__struct_fields__
                if f not in {"attempts", "attempt_count"}
            },
            "attempt_count": delivery.attempts,
            "status": delivery.status.value,
        },
        schemas.Delivery,
        from_attributes=True,
    )
    out.attempts = [msgspec.convert(a, schemas.DeliveryAttempt, from_attributes=True) for a in attempts]
    return out


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]
    guards = [requires_organization("Webhooks"), requires_org_admin]
    dependencies = {"webhooks": org_service(WebhookService, what="Webhooks")}

    @get("", summary="List the organization's webhook endpoints")
    async def list_webhooks(
        self, webhooks: WebhookService, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Webhook]:
        items, total = await webhooks.list_and_count(limit_offset)
        return OffsetPagination([webhook_out(e) for e in items], limit_offset.limit, limit_offset.offset, total)

    @post("", summary="Create a webhook endpoint (its secret is in this answer only)")
    async def create_webhook(self, webhooks: WebhookService, data: schemas.WebhookCreate) -> schemas.Webhook:
        return webhook_out(*await webhooks.create_endpoint(data))

    @get(ID, summary="Get a webhook endpoint")
    async def get_webhook(self, webhooks: WebhookService, webhook_id: UUID) -> schemas.Webhook:
        return webhook_out(await webhooks.get(webhook_id))

    @patch(ID, summary="Update a webhook endpoint (enabling it again clears its disabled reason)")
    async def update_webhook(
        self, webhooks: WebhookService, webhook_id: UUID, data: schemas.WebhookUpdate
    ) -> schemas.Webhook:
        return webhook_out(await webhooks.update_endpoint(webhook_id, data))

    @delete(ID, summary="Delete a webhook endpoint and its delivery log")
    async def delete_webhook(self, webhooks: WebhookService, webhook_id: UUID) -> None:
        await webhooks.remove(webhook_id)

    @post(
        ID + "/rotate-secret",
        summary="A new secret (in this answer only); the old one signs beside it for 24 hours",
        status_code=200,
    )
    async def rotate_secret(self, webhooks: WebhookService, webhook_id: UUID) -> schemas.Webhook:
        return webhook_out(*await webhooks.rotate_secret(webhook_id))

    @get(ID + "/deliveries", summary="The delivery log, newest first, each delivery with its attempts")
    async def list_deliveries(
        self,
        webhooks: WebhookService,
        webhook_id: UUID,
        limit_offset: LimitOffset,
        event_type: EventTypeFilter = None,
        status: StatusFilter = None,
    ) -> OffsetPagination[schemas.Delivery]:
        rows, total, attempts = await webhooks.list_deliveries(
            webhook_id, limit_offset, event_type=event_type, status=status
        )
        items = [delivery_out(d, attempts[d.id]) for d in rows]
        return OffsetPagination(items, limit_offset.limit, limit_offset.offset, total)

    @post(ID + "/deliveries/{delivery_id:uuid}/retry", summary="Replay one delivery now", status_code=202)
    async def retry_delivery(self, webhooks: WebhookService, webhook_id: UUID, delivery_id: UUID) -> schemas.Delivery:
        await webhooks.retry(webhook_id, delivery_id)
        return delivery_out(*await webhooks.get_delivery(webhook_id, delivery_id))

    @post(ID + "/test", summary="Send a ping event to this endpoint", status_code=202)
    async def test_webhook(self, webhooks: WebhookService, webhook_id: UUID) -> schemas.Delivery:
        delivery = await webhooks.ping(webhook_id)
        return delivery_out(delivery, [])
