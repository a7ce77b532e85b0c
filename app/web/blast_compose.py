"""The page that creates a blast: name, content with a live preview for a sample audience member, the
servicechain, the audience (categories and/or contacts found by a search) counted before sending, and an
optional send time. It creates the blast through :class:`BlastService`, under the API's rules.

Every part that updates itself (the audience count, the preview, the contact picker) is also reachable
without script: the form's other buttons (``intent``) re-render the page with the form as typed, and only
the "Create blast" button (``intent=send``) creates anything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.plugins.flash import flash
from sqlalchemy.ext.asyncio import AsyncSession

from app.blasts import schemas
from app.blasts.services import BlastService
from app.clock import utcnow
from app.contacts.models import Contact
from app.contacts.services import CategoryService, ContactService, count_contacts_per_category
from app.errors import Conflict, PaymentRequired, ValidationProblem
from app.messaging import templating
from app.messaging.services import ServicechainService, request_hash
from app.messaging.templating import MAX_CONTENT
from app.queues import DEFAULT_QUEUE
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope
from app.tenants.models import Organization, Plan
from app.tenants.principal import Principal
from app.textfields import max_length
from app.web.common import BY_NAME, FormErrors, form_values, page, parse_uuid, read_form, see_other, text

LIST_URL = "/blasts"
WRITE = requires_scope("blasts:write")
NAME_LIMIT = max_length(schemas.BlastCreate, "name")
MATCHES = 10  #: contacts a search offers
SAMPLES = 20  #: audience members a preview may be rendered for
CATEGORY_CHOICES = 500
#: the organization has no time zone setting: send times are read and shown in UTC
TIMEZONE = "UTC"
#: a send time this far in the past is a mistake, not "now"
PAST_SLACK = timedelta(minutes=1)
SELECTION_CHANGED = {"HX-Trigger": "blast-selection"}


def new_idempotency_key() -> str:
    return f"web-blast-{uuid4()}"


def _uuids(form: FormMultiDict, name: str, limit: int) -> list[UUID]:
    found = (parse_uuid(v) for v in form_values(form, name)[: limit * 2])
    return list(dict.fromkeys(i for i in found if i is not None))[:limit]


def read_blast_form(raw: FormMultiDict) -> dict[str, Any]:
    """The form as typed (bounded), with the selection as lists of ids; a contact being added joins them."""
    content = raw.get("content")
    contact_ids = _uuids(raw, "contact_ids", schemas.MAX_CONTACT_IDS)
    added = parse_uuid(text(raw, "add_contact", 64))
    if added is not None and added not in contact_ids:
        contact_ids.append(added)
    return {
        "name": text(raw, "name", NAME_LIMIT * 4),
        "content": content[: MAX_CONTENT * 2] if isinstance(content, str) else "",
        "servicechain_id": text(raw, "servicechain_id", 64),
        "category_ids": _uuids(raw, "category_ids", schemas.MAX_CATEGORY_IDS),
        "contact_ids": contact_ids,
        "send_at": text(raw, "send_at", 40),
        "contact_q": text(raw, "contact_q", 200),
        "sample_contact_id": text(raw, "sample_contact_id", 64),
        "idempotency_key": text(raw, "idempotency_key", 200) or new_idempotency_key(),
        "intent": text(raw, "intent", 20),
    }


def parse_send_at(value: str, errors: FormErrors) -> datetime | None:
    """A ``datetime-local`` value, read in UTC; empty: send now."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors.add("send_at", "Enter the date and time to send at, or leave it empty to send now.")
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment < utcnow() - PAST_SLACK:
        errors.add("send_at", f"That time has passed ({TIMEZONE}). Choose a later one, or leave it empty to send now.")
        return None
    return moment


def check_fields(form: dict[str, Any], errors: FormErrors) -> tuple[UUID | None, datetime | None]:
    """The page's own checks (the service checks the rest): the chain id and the send time, parsed."""
    if not form["name"]:
        errors.add("name", "Name the blast (only you see the name).")
    elif len(form["name"]) > NAME_LIMIT:
        errors.add("name", f"At most {NAME_LIMIT} characters.")
    if not form["content"].strip():
        errors.add("content", "Write the message.")
    elif len(form["content"]) > MAX_CONTENT:
        errors.add("content", f"At most {MAX_CONTENT} characters.")
    chain_id = parse_uuid(form["servicechain_id"])
    if chain_id is None:
        errors.add("servicechain_id", "Choose the servicechain to send through.")
    if not form["contact_ids"] and not form["category_ids"]:
        errors.add("audience", "Choose who gets it: one or more categories and/or contacts.")
    return chain_id, parse_send_at(form["send_at"], errors)


class BlastComposePages(Controller):
    path = LIST_URL
    guards = [WRITE]
    dependencies = {"blasts": org_service(BlastService, what="Blasts")}

    # ------------------------------------------------------------ the parts of the form

    def _contacts(self, blasts: BlastService) -> ContactService:
        return scoped(ContactService, blasts.session, blasts.organization_id)

    async def _audience(self, blasts: BlastService, form: dict[str, Any]) -> dict[str, Any]:
        """The count before sending (as the service will count it), and whether the credits cover it."""
        count, opted_out = await blasts.audience_count(form["contact_ids"], form["category_ids"])
        org = await blasts.session.get(Organization, blasts.organization_id)
        short = None
        if org is not None and org.plan == Plan.PAY_IN_ADVANCE:
            available = org.credits - org.credits_reserved
            short = {"available": available} if count > available else None
        chosen = bool(form["contact_ids"] or form["category_ids"])
        return {"count": count, "opted_out": opted_out, "chosen": chosen, "short": short}

    async def _picker(self, blasts: BlastService, form: dict[str, Any]) -> dict[str, Any]:
        """The contacts chosen one by one, and the matches of the search (those not chosen yet)."""
        contacts = self._contacts(blasts)
        chosen = await contacts.list_by_ids(form["contact_ids"])
        by_id = {c.id: c for c in chosen}
        matches: list[Contact] = []
        if form["contact_q"]:
            try:
                filters = contacts.search_filters(form["contact_q"])
            except ValidationProblem:
                filters = []
            found, _ = await contacts.search(*filters, LimitOffset(limit=MATCHES + len(by_id), offset=0))
            matches = [c for c in found if c.id not in by_id][:MATCHES]
        return {"chosen": [by_id[i] for i in form["contact_ids"] if i in by_id], "matches": matches}

    async def _preview(self, blasts: BlastService, form: dict[str, Any]) -> dict[str, Any]:
        """The content rendered for the picked audience member (else the first), or the template's error
        as the API would refuse it."""
        content = form["content"]
        samples = await blasts.sample_members(form["contact_ids"], form["category_ids"], SAMPLES)
        picked = parse_uuid(form["sample_contact_id"])
        contact = next((c for c in samples if c.id == picked), samples[0] if samples else None)
        out: dict[str, Any] = {"samples": samples, "contact": contact}
        if len(content) > MAX_CONTENT:
            return {**out, "error": f"The message is longer than {MAX_CONTENT} characters."}
        if not content.strip():
            return {**out, "empty": True}
        try:
            templating.check(content)
            if contact is None:
                return {**out, "hint": "Choose the audience to see the message as its first member will get it."}
            return {**out, "text": await templating.render_in_thread(content, contact)}
        except templating.TemplateProblem as exc:
            return {**out, "error": str(exc)}

    async def _page(
        self, blasts: BlastService, form: dict[str, Any], errors: FormErrors, status: int = 200
    ) -> Response[Any]:
        chains_service = scoped(ServicechainService, blasts.session, blasts.organization_id)
        chains = await chains_service.list(BY_NAME)
        if not form["servicechain_id"]:
            default = await chains_service.organization_default()
            form["servicechain_id"] = str(default) if default else ""
        categories_service = scoped(CategoryService, blasts.session, blasts.organization_id)
        categories = await categories_service.list(BY_NAME, LimitOffset(limit=CATEGORY_CHOICES, offset=0))
        counts = await count_contacts_per_category(categories_service, [c.id for c in categories])
        context = {
            "form": {**form, "category_ids": [str(i) for i in form["category_ids"]]},
            "errors": errors,
            "chain_options": [("", "Choose a servicechain…"), *((str(c.id), c.name) for c in chains)],
            "has_chains": bool(chains),
            "categories": categories,
            "category_counts": counts,
            "has_contacts": bool(categories) or await self._contacts(blasts).count() > 0,
            "audience": await self._audience(blasts, form),
            "picker": await self._picker(blasts, form),
            "preview": await self._preview(blasts, form),
            "max_content": MAX_CONTENT,
            "timezone": TIMEZONE,
            "min_send_at": utcnow().strftime("%Y-%m-%dT%H:%M"),
        }
        return page("blasts/new.html", context, status=status)

    # ------------------------------------------------------------ the page and its live parts

    @get("/new", name="blast-new")
    async def new_blast(self, blasts: BlastService) -> Response[Any]:
        return await self._page(blasts, read_blast_form(FormMultiDict({})), FormErrors())

    @post("/audience", name="blast-audience", status_code=200)
    async def audience(self, request: Request[Any, Any, Any], blasts: BlastService) -> Response[Any]:
        form = read_blast_form(await read_form(request))
        return page("partials/_blast_audience.html", {"audience": await self._audience(blasts, form)})

    @post("/preview", name="blast-preview", status_code=200)
    async def preview(self, request: Request[Any, Any, Any], blasts: BlastService) -> Response[Any]:
        form = read_blast_form(await read_form(request))
        return page("partials/_blast_preview.html", {"preview": await self._preview(blasts, form), "form": form})

    @post("/contacts", name="blast-contacts", status_code=200)
    async def contacts(self, request: Request[Any, Any, Any], blasts: BlastService) -> Response[Any]:
        """The contact picker: the search's matches, and the chosen contacts (one more when one is added;
        the audience and the preview are then told to update)."""
        raw = await read_form(request)
        form = read_blast_form(raw)
        headers = SELECTION_CHANGED if text(raw, "add_contact") else {}
        context = {"picker": await self._picker(blasts, form), "form": form}
        return page("partials/_blast_contacts.html", context, headers=headers)

    # ------------------------------------------------------------ creating

    @post("/", name="blast-create")
    async def create(
        self, request: Request[Any, Any, Any], blasts: BlastService, principal: Principal, db_session: AsyncSession
    ) -> Response[Any]:
        form = read_blast_form(await read_form(request))
        errors = FormErrors()
        if form["intent"] != "send":  # a search or an added contact without script: the form again
            return await self._page(blasts, form, errors)
        chain_id, send_at = check_fields(form, errors)
        status = 422
        if not errors and chain_id is not None:
            data = schemas.BlastCreate(
                name=form["name"],
                content=form["content"],
                servicechain_id=chain_id,
                contact_ids=form["contact_ids"],
                category_ids=form["category_ids"],
                send_at=send_at,
            )
            queue = request.app.state.queues[DEFAULT_QUEUE]
            try:
                blast, replayed = await blasts.submit(
                    data, queue, principal.id, form["idempotency_key"], request_hash(data)
                )
            except ValidationProblem as exc:
                errors.take(exc, "content")
                for name in ("contact_ids", "category_ids"):  # the audience's problems go with the audience
                    if (problem := errors.fields.pop(name, None)) is not None:
                        errors.add("audience", problem)
            except NotFoundError:  # a chain deleted meanwhile, or not this organization's
                errors.add("servicechain_id", "Choose a servicechain from the list.")
            except PaymentRequired:
                status = 402
            except Conflict:
                errors.add(None, "This form was already sent with other content. Check the blasts, or send again.")
                form["idempotency_key"] = new_idempotency_key()
                status = 409
            else:
                if not replayed:
                    when = f" It starts at {blast.send_at:%d %b %Y, %H:%M} {TIMEZONE}." if blast.send_at else ""
                    flash(request, f"Blast “{blast.name}” accepted for {blast.audience} contact(s).{when}", "success")
                return await see_other(db_session, f"{LIST_URL}/{blast.id}")
        await db_session.rollback()
        if status == 402:
            audience = await self._audience(blasts, form)
            available = audience["short"]["available"] if audience["short"] else 0
            errors.add(
                None,
                f"Not enough credits: this blast needs {audience['count']} and the organization has {available} "
                "available. Ask an organization admin to add credits, or choose a smaller audience.",
            )
        return await self._page(blasts, form, errors, status=status)
