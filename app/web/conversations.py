"""Organization pages: a contact's conversation (both directions, updating by itself while it is open),
its reply box, and opting a contact out of the organization or back in (org admins).

The conversation is a fragment of the contact page (``#conversation``): on its newest page it asks for
itself again every 2 s (``hx-trigger="every 2s"``), so replies and receipts show up without a reload;
an older page does not poll. ``static/js/app.js`` keeps the thread scrolled to the bottom.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from litestar import Controller, Response, post
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact
from app.contacts.services import ContactService
from app.errors import Conflict, PaymentRequired, ValidationProblem
from app.messaging.conversation import reply, thread
from app.messaging.coordinator import Coordinator
from app.messaging.models import Message
from app.messaging.services import MessageService
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_org_admin, requires_scope
from app.tenants.principal import Principal
from app.web.common import FilteredPage, done, page, read_form, refused

CONTACTS_URL = "/contacts"
TARGET = "conversation"
FRAGMENT = "partials/_conversation.html"
WRITE = requires_scope("contacts:write")
SEND = requires_scope("messages:send")
#: seconds between two looks at an open conversation
POLL_SECONDS = 2


def may_opt_in(principal: Principal) -> bool:
    """Opting a contact back in is an org admin's decision (the same rule as the opt-in guard)."""
    return principal.is_org_admin and principal.has_scope("users:admin")


def new_reply_key() -> str:
    """The Idempotency-Key of one reply form: a double submit sends the reply once."""
    return f"web-reply-{uuid4()}"


async def conversation_context(
    contacts: ContactService, contact: Contact, principal: Principal, number: str | None = None
) -> dict[str, Any]:
    """What ``_conversation.html`` needs (no conversation without ``messages:read``)."""
    if not principal.has_scope("messages:read"):
        return {"contact": contact, "conversation": None, "live": False}
    messages = scoped(MessageService, contacts.repository.session, contacts.organization_id)
    found = await thread(messages, contact.id, number)
    listing: FilteredPage[Message] = FilteredPage(
        items=found.items,
        total=found.total,
        number=found.number,
        size=found.size,
        url=f"{CONTACTS_URL}/{contact.id}",
        target=TARGET,
    )
    return {"contact": contact, "conversation": listing, "live": found.is_latest, "poll_seconds": POLL_SECONDS}


def _problem(exc: Exception) -> str:
    if isinstance(exc, PaymentRequired):
        reason = str(exc)
        return reason if reason.startswith("Not enough credits") else f"Not enough credits: {reason}"
    if isinstance(exc, Conflict):
        return "This reply was already sent with other content: reload the page to write another."
    return getattr(exc, "detail", None) or str(exc) or "The reply was refused."


class ConversationPages(Controller):
    path = CONTACTS_URL
    dependencies = {"contacts": org_service(ContactService, what="The contact list")}

    @post("/{contact_id:uuid}/reply", guards=[requires_scope("contacts:read"), SEND])
    async def send_reply(
        self,
        request: HTMXRequest,
        contact_id: UUID,
        contacts: ContactService,
        principal: Principal,
        db_session: AsyncSession,
        coordinator: Coordinator,
    ) -> Response[Any]:
        contact = await contacts.get(contact_id)  # another organization's: 404
        name, back = contact.display_name, f"{CONTACTS_URL}/{contact_id}"
        form = await read_form(request)
        content = form.get("content")
        key = form.get("idempotency_key")
        messages = scoped(MessageService, db_session, contacts.organization_id)
        try:
            _, replayed = await reply(
                messages,
                coordinator,
                contact_id,
                content if isinstance(content, str) else "",
                key.strip()[:200] if isinstance(key, str) and key.strip() else None,
            )
        except (ValidationProblem, PaymentRequired, Conflict) as exc:
            return await refused(request, _problem(exc), back)

        async def fragment() -> Response[Any]:
            fresh = await contacts.get(contact_id)
            context = await conversation_context(contacts, fresh, principal)
            return page(FRAGMENT, {**context, "oob_flashes": True, "oob_reply_key": new_reply_key()})

        message = "This reply was already sent." if replayed else f"Reply to {name} accepted."
        return await done(request, db_session, message, back, fragment, category="info" if replayed else "success")

    @post("/{contact_id:uuid}/opt-out", guards=[WRITE, requires_org_admin])
    async def opt_out(
        self, request: HTMXRequest, contact_id: UUID, contacts: ContactService, db_session: AsyncSession
    ) -> Response[Any]:
        contact = await contacts.set_opt_out(contact_id, True)
        message = f"{contact.display_name} is opted out: every later message to them fails, through any service."
        return await done(request, db_session, message, f"{CONTACTS_URL}/{contact_id}")

    @post("/{contact_id:uuid}/opt-in", guards=[WRITE, requires_org_admin])
    async def opt_in(
        self, request: HTMXRequest, contact_id: UUID, contacts: ContactService, db_session: AsyncSession
    ) -> Response[Any]:
        contact = await contacts.set_opt_out(contact_id, False)
        message = f"{contact.display_name} is opted back in: messages to them are sent again."
        return await done(request, db_session, message, f"{CONTACTS_URL}/{contact_id}")
