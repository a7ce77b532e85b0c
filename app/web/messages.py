"""Organization pages: compose a message (with a live preview), the message log, and a message's detail
page whose state and attempts update by themselves while it is being sent (htmx polling)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

from advanced_alchemy.filters import LimitOffset
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import aware, utcnow
from app.contacts.models import Contact
from app.contacts.services import ContactService
from app.errors import Conflict, PaymentRequired, ValidationProblem
from app.messaging import schemas
from app.messaging.coordinator import Coordinator
from app.messaging.labels import IN_FLIGHT, STATE_LABELS
from app.messaging.models import Message, MessageState
from app.messaging.services import MessageService, ServicechainService
from app.messaging.templating import MAX_CONTENT
from app.providers import provide_registry
from app.servicehost.registry import PluginRegistry
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope
from app.web.common import BY_NAME, FormErrors, ListView, page, parse_uuid, read_form, see_other, text, wants_fragment
from app.web.common.live import etag_of, not_modified

LIST_URL = "/messages"
READ = requires_scope("messages:read")
SEND = requires_scope("messages:send")
CONTACT_CHOICES = 100
#: seconds between two looks of the message log at itself (it answers 304 while nothing changed)
LOG_POLL_SECONDS = 3
#: a sent message whose service gives receipts: its page asks every few seconds for a while after its
#: last change, then stops (a provider that never reports would keep it polling for ever)
RECEIPT_POLL = "5s"
RECEIPT_WATCH = timedelta(hours=1)
AWAITING_RECEIPT = frozenset({MessageState.SENT, MessageState.DELIVERED_SERVICE, MessageState.DELIVERED_USER})
DIRECTIONS = {"outgoing": "Outgoing", "incoming": "Incoming"}


async def poll_every(message: Message, registry: PluginRegistry) -> str | None:
    """How often a message's status block asks for itself again; None once nothing more is expected:
    every second in flight (10 s while scheduled), every few seconds while a service that gives
    receipts may still report (for :data:`RECEIPT_WATCH` after the last change), never once final."""
    if message.state in IN_FLIGHT:
        return "10s" if message.send_at is not None and message.state == MessageState.PENDING else "1s"
    if message.state not in AWAITING_RECEIPT or message.service is None:
        return None
    if utcnow() - (aware(message.updated_at) or utcnow()) >= RECEIPT_WATCH:
        return None
    await registry.ensure_checked()
    info = registry.info(message.service)
    return RECEIPT_POLL if info is not None and info.receipts else None


LIST = ListView(
    url=LIST_URL,
    target="message-list",
    name="messages",
    template="messages/list.html",
    fragment="partials/_message_table.html",
)


def _contacts(messages: MessageService) -> ContactService:
    return scoped(ContactService, messages.session, messages.organization_id)


def new_idempotency_key() -> str:
    return f"web-{uuid4()}"


async def contact_choices(contacts: ContactService, q: str = "", selected: Contact | None = None) -> list[Contact]:
    """Contacts to offer in the compose form: the chosen one first, then the newest matching ``q``."""
    try:
        filters = contacts.search_filters(q.strip() or None)
    except ValidationProblem:
        filters = []
    items, _ = await contacts.search(*filters, LimitOffset(limit=CONTACT_CHOICES, offset=0))
    found = list(items)
    if selected is not None:
        found = [selected, *(c for c in found if c.id != selected.id)]
    return found


class MessagePages(Controller):
    path = LIST_URL
    dependencies = {"messages": org_service(MessageService, what="The message log")}

    # ------------------------------------------------------------ the log

    @get("/", name="messages", guards=[READ])
    async def list_messages(
        self,
        request: HTMXRequest,
        messages: MessageService,
        page_number: int,
        state_filter: str | None = Parameter(query="state", default=None, required=False, max_length=40),
        direction: str | None = Parameter(query="direction", default=None, required=False, max_length=20),
    ) -> Response[Any]:
        state = state_filter if state_filter in STATE_LABELS else ""
        direction = direction if direction in DIRECTIONS else ""
        async def contacts(items: Sequence[Message]) -> dict[str, Any]:
            found = await _contacts(messages).list_by_ids(m.contact_id for m in items)
            return {"contacts": {c.id: c for c in found}}

        params = {"state": state, "direction": direction}
        filters = messages.search_filters(state=state, direction=direction)
        version = await messages.latest_change()  # any change of the organization's messages: a new table
        etag = etag_of("log", messages.organization_id, state, direction, page_number, version)
        if (unchanged := not_modified(request, etag, LIST.target)) is not None:
            return unchanged
        poll_url = f"{LIST_URL}?" + urlencode({k: v for k, v in {**params, "page": page_number}.items() if v})
        return await LIST.render(
            request,
            messages,
            page_number,
            *filters,
            params=params,
            more=contacts,
            directions=DIRECTIONS,
            state=state,
            direction=direction,
            log_live={"etag": etag, "url": poll_url, "seconds": LOG_POLL_SECONDS},
        )

    # ------------------------------------------------------------ compose

    async def _compose(
        self,
        messages: MessageService,
        form: dict[str, Any],
        errors: FormErrors,
        *,
        contact: Contact | None = None,
        preview: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response[Any]:
        service = scoped(ServicechainService, messages.session, messages.organization_id)
        chains = await service.list(BY_NAME)
        default_chain = next((c for c in chains if contact is not None and c.id == contact.servicechain_id), None)
        org_default = await service.organization_default()
        org_chain = next((c for c in chains if c.id == org_default), None)
        if default_chain:
            default_label = f"The contact's default chain ({default_chain.name})"
        elif org_chain:
            default_label = f"The contact's default chain, else the organization's ({org_chain.name})"
        else:
            default_label = "The contact's default chain"
        context = {
            "form": form,
            "errors": errors,
            "contact": contact,
            "contacts": await contact_choices(_contacts(messages), selected=contact),
            "chain_options": [("", default_label), *((str(c.id), c.name) for c in chains)],
            "has_chains": bool(chains),
            "preview": preview or {},
            "max_content": MAX_CONTENT,
        }
        return page("messages/compose.html", context, status=status)

    @get("/new", name="message-new", guards=[SEND])
    async def compose(
        self,
        messages: MessageService,
        contact_param: str | None = Parameter(query="contact_id", default=None, required=False, max_length=64),
    ) -> Response[Any]:
        contact = None
        contact_id = parse_uuid(contact_param)
        if contact_id is not None:
            contact = await _contacts(messages).get(contact_id)  # another organization's contact: 404
        form = {
            "contact_id": str(contact.id) if contact else "",
            "servicechain_id": "",
            "content": "",
            "idempotency_key": new_idempotency_key(),
        }
        return await self._compose(messages, form, FormErrors(), contact=contact)

    @get("/contact-options", name="message-contact-options", guards=[SEND])
    async def contact_options(
        self,
        messages: MessageService,
        q: str | None = Parameter(query="contact_q", default=None, required=False, max_length=200),
        selected: str | None = Parameter(query="contact_id", default=None, required=False, max_length=64),
    ) -> Response[Any]:
        """The ``<option>``s of the compose form's contact select, narrowed by a search."""
        contacts = _contacts(messages)
        chosen = None
        chosen_id = parse_uuid(selected)
        if chosen_id is not None:
            chosen = await contacts.get_one_or_none(id=chosen_id)
        found = await contact_choices(contacts, q or "", None)
        if chosen is not None and not any(c.id == chosen.id for c in found):
            found = [chosen, *found]
        context = {"contacts": found, "selected": str(chosen.id) if chosen else ""}
        return page("partials/_contact_options.html", context)

    @post("/preview", name="message-preview", guards=[SEND], status_code=200)
    async def preview(self, request: Request[Any, Any, Any], messages: MessageService) -> Response[Any]:
        """The content rendered for the chosen contact, or the template's error (a fragment)."""
        form = await read_form(request)
        content = form.get("content")
        content = content if isinstance(content, str) else ""
        contact_id = parse_uuid(text(form, "contact_id"))
        return page("partials/_preview.html", {"preview": await self._render(messages, contact_id, content)})

    async def _render(self, messages: MessageService, contact_id: UUID | None, content: str) -> dict[str, Any]:
        if len(content) > MAX_CONTENT:
            return {"error": f"The message is longer than {MAX_CONTENT} characters."}
        if not content.strip():
            return {"empty": True}
        if contact_id is None:
            return {"hint": "Choose a contact to see the message as they will get it."}
        contact = await _contacts(messages).get_one_or_none(id=contact_id)
        if contact is None:
            return {"hint": "Choose a contact from the list."}
        try:
            _, rendered = await messages.render_for(contact.id, content)
        except ValidationProblem as exc:
            return {"error": exc.detail, "contact": contact}
        return {"text": rendered, "contact": contact}

    @post("/", guards=[SEND])
    async def send(
        self, request: HTMXRequest, messages: MessageService, coordinator: Coordinator, db_session: AsyncSession
    ) -> Response[Any]:
        raw = await read_form(request)
        errors = FormErrors()
        content = raw.get("content")
        content = content if isinstance(content, str) else ""
        form = {
            "contact_id": text(raw, "contact_id", 64),
            "servicechain_id": text(raw, "servicechain_id", 64),
            "content": content[: MAX_CONTENT * 2],
            "idempotency_key": text(raw, "idempotency_key", 200) or new_idempotency_key(),
        }
        contact_id = parse_uuid(form["contact_id"])
        chain_id = parse_uuid(form["servicechain_id"])
        contact = await _contacts(messages).get(contact_id) if contact_id else None  # foreign: 404
        if contact is None:
            errors.add("contact_id", "Choose the contact to send to.")
        if form["servicechain_id"] and chain_id is None:
            errors.add("servicechain_id", "Choose a servicechain from the list.")
        if not content.strip():
            errors.add("content", "Write the message.")
        elif len(content) > MAX_CONTENT:
            errors.add("content", f"At most {MAX_CONTENT} characters.")
        status = 422
        if not errors and contact is not None:
            data = schemas.MessageCreate(contact_id=contact.id, content=content, servicechain_id=chain_id)
            try:
                message, replayed = await messages.submit(data, form["idempotency_key"], coordinator=coordinator)
            except ValidationProblem as exc:
                errors.take(exc, "content")
            except PaymentRequired as exc:
                reason = str(exc)
                errors.add(None, reason if reason.startswith("Not enough credits") else f"Not enough credits: {reason}")
                status = 402
            except Conflict:
                errors.add(None, "This form was already sent with other content. Check the message log, or send again.")
                form["idempotency_key"] = new_idempotency_key()
                status = 409
            else:
                if not replayed:
                    flash(request, f"Message to {contact.display_name} accepted.", "success")
                return await see_other(db_session, f"{LIST_URL}/{message.id}")
        if contact is not None:  # submit's rollback expired it: load it again
            contact = await _contacts(messages).get_one_or_none(id=contact_id)
        preview = await self._render(messages, contact.id if contact else None, content)
        return await self._compose(messages, form, errors, contact=contact, preview=preview, status=status)

    # ------------------------------------------------------------ one message

    @get(
        "/{message_id:uuid}",
        name="message",
        guards=[READ],
        dependencies={"registry": Provide(provide_registry, sync_to_thread=False)},
    )
    async def message_detail(
        self, request: HTMXRequest, message_id: UUID, messages: MessageService, registry: PluginRegistry
    ) -> Response[Any]:
        message = await messages.get(message_id)
        every = await poll_every(message, registry)
        etag = etag_of("message", message.id, message.updated_at, await messages.message_version(message.id), every)
        if (unchanged := not_modified(request, etag, "message-status")) is not None:
            return unchanged
        attempts = await messages.attempts_of(message.id)
        context: dict[str, Any] = {
            "etag": etag,
            "message": message,
            "attempts": attempts,
            "live": every is not None,
            "poll_every": every,
            "in_flight": message.state in IN_FLIGHT,
            "scheduled": message.send_at is not None and message.state == MessageState.PENDING,
        }
        if wants_fragment(request, "message-status"):
            return page("partials/_message_status.html", context)
        contact = await _contacts(messages).get_one_or_none(id=message.contact_id)
        chain = None
        if message.servicechain_id is not None:
            chains = scoped(ServicechainService, messages.session, messages.organization_id)
            chain = await chains.get_one_or_none(id=message.servicechain_id)
        reply_to = await messages.get_one_or_none(id=message.reply_to_id) if message.reply_to_id else None
        context.update({"contact": contact, "chain": chain, "reply_to": reply_to})
        return page("messages/detail.html", context)
