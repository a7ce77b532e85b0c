"""REST controllers of servicechains and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, Response, delete, get, patch, post
from litestar.params import Parameter

from app.api.deps import changes
from app.contacts.services import ContactService
from app.messaging import schemas
from app.messaging.coordinator import Coordinator
from app.messaging.models import Attempt, Message
from app.messaging.services import MessageService, ServicechainService
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope

CHAINS = org_service(ServicechainService, what="The servicechain list")
MESSAGES = org_service(MessageService, what="The message log")


def message_out(message: Message, attempts: list[Attempt] | None = None) -> schemas.Message:
    out = msgspec.convert(
        {
            **{f: getattr(message, f) for f in schemas.Message.__struct_fields__ if f not in {"reply_to", "attempts"}},
            "reply_to": message.reply_to_id,
        },
        schemas.Message,
        from_attributes=True,
    )
    if attempts is not None:
        out.attempts = [msgspec.convert(a, schemas.Attempt, from_attributes=True) for a in attempts]
    return out


class ServicechainController(Controller):
    path = "/servicechains"
    tags = ["servicechains"]
    dependencies = {"chains": CHAINS}

    @get("", summary="List servicechains", guards=[requires_scope("servicechains:read")])
    async def list_chains(
        self, chains: ServicechainService, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Servicechain]:
        items, total = await chains.list_and_count(limit_offset, OrderBy(field_name="name", sort_order="asc"))
        return chains.to_schema(items, total, filters=[limit_offset], schema_type=schemas.Servicechain)

    @post("", summary="Create a servicechain", guards=[requires_scope("servicechains:write")])
    async def create_chain(
        self, chains: ServicechainService, data: schemas.ServicechainCreate
    ) -> schemas.Servicechain:
        chain = await chains.create_chain(msgspec.structs.asdict(data))
        return chains.to_schema(chain, schema_type=schemas.Servicechain)

    @get("/{chain_id:uuid}", summary="Get a servicechain", guards=[requires_scope("servicechains:read")])
    async def get_chain(self, chains: ServicechainService, chain_id: UUID) -> schemas.Servicechain:
        return chains.to_schema(await chains.get(chain_id), schema_type=schemas.Servicechain)

    @patch("/{chain_id:uuid}", summary="Update a servicechain", guards=[requires_scope("servicechains:write")])
    async def update_chain(
        self, chains: ServicechainService, chain_id: UUID, data: schemas.ServicechainUpdate
    ) -> schemas.Servicechain:
        chain = await chains.update_chain(chain_id, changes(data))
        return chains.to_schema(chain, schema_type=schemas.Servicechain)

    @delete(
        "/{chain_id:uuid}", summary="Delete a servicechain (409 while in use)",
        guards=[requires_scope("servicechains:write")],
    )
    async def delete_chain(self, chains: ServicechainService, chain_id: UUID) -> None:
        await chains.remove(chain_id)


class MessageController(Controller):
    path = "/messages"
    tags = ["messages"]
    dependencies = {"messages": MESSAGES}

    @post("", summary="Send a message (201; Idempotency-Key supported)", guards=[requires_scope("messages:send")])
    async def send(
        self,
        messages: MessageService,
        coordinator: Coordinator,
        data: schemas.MessageCreate,
        idempotency_key: Annotated[
            str | None, Parameter(header="Idempotency-Key", max_length=255, required=False)
        ] = None,
    ) -> Response[schemas.Message]:
        sent = await messages.submit_with_attempts(data, idempotency_key, coordinator=coordinator)
        message, replayed, attempts = sent
        out = message_out(message, attempts)
        return Response(out, status_code=201, headers={"Idempotent-Replayed": "true"} if replayed else {})

    @post("/preview", summary="Render content for a contact", guards=[requires_scope("messages:send")], status_code=200)
    async def preview(self, messages: MessageService, data: schemas.Preview) -> schemas.Rendered:
        _, content = await messages.render_for(data.contact_id, data.content)
        return schemas.Rendered(content=content)

    @get("", summary="List messages", guards=[requires_scope("messages:read")])
    async def list_messages(
        self,
        messages: MessageService,
        limit_offset: LimitOffset,
        contact_id: UUID | None = None,
        message_state: Annotated[schemas.StateName | None, Parameter(query="state")] = None,
        direction: Annotated[str | None, Parameter(query="direction", pattern="^(incoming|outgoing)$")] = None,
        blast_id: UUID | None = None,
        since: datetime | None = None,
    ) -> OffsetPagination[schemas.Message]:
        items, total = await messages.search(
            limit_offset,
            contact_id=contact_id,
            state=message_state,
            direction=direction,
            blast_id=blast_id,
            since=since,
        )
        return OffsetPagination(
            items=[message_out(m) for m in items], total=total, limit=limit_offset.limit, offset=limit_offset.offset
        )

    @get("/{message_id:uuid}", summary="Get a message with its attempts", guards=[requires_scope("messages:read")])
    async def get_message(self, messages: MessageService, message_id: UUID) -> schemas.Message:
        message = await messages.get(message_id)
        return message_out(message, await messages.attempts_of(message_id))


class ConversationController(Controller):
    path = "/contacts/{contact_id:uuid}/messages"
    tags = ["contacts"]
    dependencies = {"messages": MESSAGES}

    @get("", summary="A contact's conversation, both directions, oldest first",
         guards=[requires_scope("contacts:read", "messages:read")])
    async def conversation(
        self, messages: MessageService, contact_id: UUID, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Message]:
        await scoped(ContactService, messages.session, messages.organization_id).get(contact_id)
        items, total = await messages.search(limit_offset, contact_id=contact_id, oldest_first=True)
        return OffsetPagination(
            items=[message_out(m) for m in items], total=total, limit=limit_offset.limit, offset=limit_offset.offset
        )
