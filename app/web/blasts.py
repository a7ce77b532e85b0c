"""Organization pages of blasts: the list (with a progress bar per row), a blast's detail page (its live
progress and per-state counts, its messages with the message log's filters) and cancelling one.

The create page is :mod:`app.web.blast_compose`. The list and the detail's status block ask for themselves
again while a blast runs, answered 304 while nothing they show changed (decision 0028); polling stops by
itself once nothing is running (the answer carries no trigger). See docs/decisions/0031-blast-pages.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.blasts import present as blast_views
from app.blasts.models import Blast, BlastState
from app.blasts.services import BlastService
from app.contacts.services import ContactService
from app.errors import Conflict
from app.messaging.labels import STATE_LABELS
from app.messaging.models import Message
from app.messaging.services import MessageService, ServicechainService
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope
from app.web.common import ListView, done, page, read_form, refused, text, wants_fragment
from app.web.common.live import etag_of, not_modified

LIST_URL = "/blasts"
READ = requires_scope("blasts:read")
WRITE = requires_scope("blasts:write")
STATUS_TARGET = "blast-status"
#: seconds between two looks of a live block at itself (answered 304 while nothing changed)
LIST_POLL_SECONDS = 3
STATUS_POLL_SECONDS = 1
SCHEDULED_POLL_SECONDS = 10
RUNNING = {BlastState.FANNING_OUT, BlastState.SENDING}

LIST = ListView(
    url=LIST_URL,
    target="blast-list",
    name="blasts",
    template="blasts/list.html",
    fragment="partials/_blast_table.html",
)
#: the messages of one blast: the message log's table, its URL set per blast
MESSAGES = ListView(
    url=LIST_URL,
    target="message-list",
    name="messages",
    template="blasts/detail.html",
    fragment="partials/_message_table.html",
)


def state_of(value: str | None) -> str:
    """A blast state from a query (anything else: no filter)."""
    return value if value in {s.value for s in BlastState} else ""


def _messages(blasts: BlastService) -> MessageService:
    return scoped(MessageService, blasts.session, blasts.organization_id)


async def _version(blasts: BlastService) -> tuple[Any, Any]:
    """What a live block depends on: the latest change of the organization's blasts and messages (two
    indexed lookups, never the page's own queries)."""
    return await blast_views.latest_change(blasts.session, blasts.organization_id), await _messages(
        blasts
    ).latest_change()


def poll_every(blast: Blast | Any) -> int | None:
    """Seconds between two polls of a blast's status while it may still change; None once it has ended."""
    if blast.state in RUNNING:
        return STATUS_POLL_SECONDS
    if blast.state == BlastState.SCHEDULED:
        return SCHEDULED_POLL_SECONDS
    return None


class BlastPages(Controller):
    path = LIST_URL
    dependencies = {"blasts": org_service(BlastService, what="Blasts")}

    # ------------------------------------------------------------ the list

    @get("/", name="blasts", guards=[READ])
    async def list_blasts(
        self,
        request: HTMXRequest,
        blasts: BlastService,
        page_number: int,
        state_filter: str | None = Parameter(query="state", default=None, required=False, max_length=40),
    ) -> Response[Any]:
        state = state_of(state_filter)
        etag = etag_of("blasts", blasts.organization_id, state, page_number, await _version(blasts))
        if (unchanged := not_modified(request, etag, LIST.target)) is not None:
            return unchanged
        params = {"state": state}
        poll_url = f"{LIST_URL}?" + urlencode({k: v for k, v in {**params, "page": page_number}.items() if v})

        async def views(items: Sequence[Blast]) -> dict[str, Any]:
            shown = {v.id: v for v in await blasts.present(items)}
            live = any(b.state in RUNNING for b in items)
            return {
                "views": shown,
                "list_live": {"etag": etag, "url": poll_url, "seconds": LIST_POLL_SECONDS} if live else None,
            }

        filters = [Blast.state == BlastState(state)] if state else []
        return await LIST.render(request, blasts, page_number, *filters, params=params, more=views, state=state)

    # ------------------------------------------------------------ one blast

    @get("/{blast_id:uuid}", name="blast", guards=[READ])
    async def blast_detail(
        self,
        request: HTMXRequest,
        blast_id: UUID,
        blasts: BlastService,
        page_number: int,
        state_filter: str | None = Parameter(query="state", default=None, required=False, max_length=40),
    ) -> Response[Any]:
        """The page; or, for a poll, its status block (``#blast-status``) or its messages (``#message-list``)."""
        blast = await blasts.get(blast_id)  # another organization's: 404
        version = await _version(blasts)
        message_state = state_filter if state_filter in STATE_LABELS else ""
        if wants_fragment(request, STATUS_TARGET):
            etag = etag_of("blast", blast.id, blast.updated_at, version)
            if (unchanged := not_modified(request, etag, STATUS_TARGET)) is not None:
                return unchanged
            return page("partials/_blast_status.html", await self._status(blasts, blast, etag))
        log_etag = etag_of("blast-log", blast.id, message_state, page_number, version)
        if (unchanged := not_modified(request, log_etag, MESSAGES.target)) is not None:
            return unchanged
        url = f"{LIST_URL}/{blast.id}"
        params = {"state": message_state}
        poll_url = f"{url}?" + urlencode({k: v for k, v in {**params, "page": page_number}.items() if v})
        messages = _messages(blasts)

        async def contacts(items: Sequence[Message]) -> dict[str, Any]:
            found = await scoped(ContactService, blasts.session, blasts.organization_id).list_by_ids(
                m.contact_id for m in items
            )
            return {"contacts": {c.id: c for c in found}}

        context: dict[str, Any] = {}
        if not wants_fragment(request, MESSAGES.target):
            status_etag = etag_of("blast", blast.id, blast.updated_at, version)
            context.update(await self._status(blasts, blast, status_etag))
            if blast.servicechain_id is not None:
                chains = scoped(ServicechainService, blasts.session, blasts.organization_id)
                context["chain"] = await chains.get_one_or_none(id=blast.servicechain_id)
        return await dataclasses.replace(MESSAGES, url=url).render(
            request,
            messages,
            page_number,
            *messages.search_filters(state=message_state, blast_id=blast.id),
            params=params,
            more=contacts,
            state=message_state,
            filter_url=url,
            log_live={"etag": log_etag, "url": poll_url, "seconds": LIST_POLL_SECONDS} if poll_every(blast) else None,
            **context,
        )

    async def _status(self, blasts: BlastService, blast: Blast, etag: str) -> dict[str, Any]:
        view = (await blasts.present([blast]))[0]
        return {"blast": blast, "view": view, "status_etag": etag, "poll_seconds": poll_every(blast)}

    # ------------------------------------------------------------ cancelling

    @get("/{blast_id:uuid}/cancel", name="blast-cancel-confirm", guards=[WRITE])
    async def confirm_cancel(self, blast_id: UUID, blasts: BlastService) -> Response[Any]:
        """The confirmation without script (with script, the button asks with ``hx-confirm``)."""
        return await self._confirmation(blasts, blast_id)

    async def _confirmation(self, blasts: BlastService, blast_id: UUID) -> Response[Any]:
        blast = await blasts.get(blast_id)  # another organization's: 404
        return page("blasts/cancel.html", {"blast": blast, "view": (await blasts.present([blast]))[0]})

    @post("/{blast_id:uuid}/cancel", name="blast-cancel", guards=[WRITE])
    async def cancel(
        self, request: Request[Any, Any, Any], blast_id: UUID, blasts: BlastService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        back = f"{LIST_URL}/{blast_id}"
        if text(form, "confirmed") != "yes":  # a form sent without the confirmation: ask first
            return await self._confirmation(blasts, blast_id)
        try:
            blast = await blasts.cancel(blast_id)  # another organization's: 404
        except Conflict as exc:
            await db_session.rollback()
            if wants_fragment(request, STATUS_TARGET):
                return await self._status_answer(request, blasts, blast_id, str(exc))
            return await refused(request, str(exc), back, status=409)
        message = f"Blast “{blast.name}” cancelled."
        if wants_fragment(request, STATUS_TARGET):

            async def status() -> Response[Any]:
                return await self._status_answer(request, blasts, blast_id)

            return await done(request, db_session, message, back, status)
        return await done(request, db_session, message, back)

    async def _status_answer(
        self, request: Request[Any, Any, Any], blasts: BlastService, blast_id: UUID, problem: str | None = None
    ) -> Response[Any]:
        """The status block as it is now (after a cancel, or with why it could not be), flashes out of band."""
        blast = await blasts.get(blast_id, auto_expunge=False)
        await blasts.session.refresh(blast)
        etag = etag_of("blast", blast.id, blast.updated_at, await _version(blasts))
        context = {**await self._status(blasts, blast, etag), "oob_flashes": problem is None, "problem": problem}
        return page("partials/_blast_status.html", context, status=409 if problem else 200)
