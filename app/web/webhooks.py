"""Org admin pages: the organization's status webhook endpoints, their secret and delivery log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.tenants.deps import org_service
from app.tenants.guards import requires_org_admin
from app.web.common import (
    FormErrors,
    ListView,
    Page,
    catching,
    checked,
    done,
    form_values,
    limit_offset,
    no_store,
    page,
    read_form,
    refused,
    text,
)
from app.webhooks import schemas
from app.webhooks.models import EVENT_TYPES, WebhookEndpoint
from app.webhooks.services import WebhookService

LIST_URL = "/webhooks"
LIST = ListView(
    url=LIST_URL,
    target="webhook-list",
    name="webhooks",
    template="webhooks/list.html",
    fragment="partials/_webhook_table.html",
    form={"url": "", "description": "", "event_types": list(EVENT_TYPES)},
)


def _detail_url(endpoint_id: UUID) -> str:
    return f"{LIST_URL}/{endpoint_id}"


def _chosen_types(form: Any, errors: FormErrors) -> list[str]:
    chosen = [t for t in form_values(form, "event_types") if t in EVENT_TYPES]
    if not chosen:
        errors.add("event_types", "Choose at least one event type.")
    return chosen


def _secret_page(endpoint: WebhookEndpoint, secret: str, rotated: bool) -> Response[Any]:
    return no_store(page("webhooks/secret.html", {"endpoint": endpoint, "secret": secret, "rotated": rotated}, 201))


class WebhookPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    dependencies = {"webhooks": org_service(WebhookService, what="The webhooks page")}

    @get("/", name="webhooks")
    async def list_webhooks(self, request: HTMXRequest, webhooks: WebhookService, page_number: int) -> Response[Any]:
        return await LIST.render(request, webhooks, page_number, event_types=EVENT_TYPES)

    @post("/")
    async def create_webhook(self, request: HTMXRequest, webhooks: WebhookService) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        url = text(form, "url", 2000)
        description = text(form, "description", 500)
        if not url:
            errors.add("url", "Give the URL that receives the events, like https://example.com/hooks/voluble.")
        types = _chosen_types(form, errors)
        if not errors:
            async with catching(errors, "url"):
                data = schemas.WebhookCreate(url=url, description=description, event_types=types)  # type: ignore[arg-type]
                endpoint, secret = await webhooks.create_endpoint(data)
            if not errors:
                return _secret_page(endpoint, secret, rotated=False)
        shown = {"url": url, "description": description, "event_types": types}
        return await LIST.render(request, webhooks, 1, event_types=EVENT_TYPES, form=shown, errors=errors, status=422)

    @get("/{endpoint_id:uuid}", name="webhook")
    async def show_webhook(
        self, request: HTMXRequest, webhooks: WebhookService, endpoint_id: UUID, page_number: int
    ) -> Response[Any]:
        endpoint = await webhooks.get(endpoint_id)
        window = limit_offset(page_number)
        rows, total, attempts = await webhooks.list_deliveries(endpoint_id, window)
        listing = Page(items=rows, total=total, number=page_number, url=_detail_url(endpoint_id), target="delivery-log")
        context = {"endpoint": endpoint, "deliveries": listing, "attempts": attempts, "event_types": EVENT_TYPES}
        if request.htmx and request.htmx.target == "delivery-log":
            return page("partials/_webhook_deliveries.html", context)
        return page("webhooks/detail.html", context)

    @post("/{endpoint_id:uuid}/settings")
    async def update_webhook(
        self, request: HTMXRequest, webhooks: WebhookService, endpoint_id: UUID, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        types = _chosen_types(form, errors)
        data = schemas.WebhookUpdate(
            url=text(form, "url", 2000),
            description=text(form, "description", 500),
            enabled=checked(form, "enabled"),
            event_types=types,  # type: ignore[arg-type]
        )
        if not errors:
            async with catching(errors, "url"):
                await webhooks.update_endpoint(endpoint_id, data)
        back = _detail_url(endpoint_id)
        if errors:
            problem = " ".join([*errors.fields.values(), *([errors.form] if errors.form else [])])
            return await refused(request, problem or "The endpoint was not saved.", back, status=422)
        return await done(request, db_session, "Webhook endpoint saved.", back)

    @post("/{endpoint_id:uuid}/rotate-secret")
    async def rotate_secret(self, webhooks: WebhookService, endpoint_id: UUID) -> Response[Any]:
        endpoint, secret = await webhooks.rotate_secret(endpoint_id)
        return _secret_page(endpoint, secret, rotated=True)

    @post("/{endpoint_id:uuid}/test")
    async def test_webhook(
        self, request: HTMXRequest, webhooks: WebhookService, endpoint_id: UUID, db_session: AsyncSession
    ) -> Response[Any]:
        back = _detail_url(endpoint_id)
        errors = FormErrors()
        async with catching(errors, "enabled"):
            await webhooks.ping(endpoint_id)
        if errors:
            return await refused(request, "The endpoint is disabled; enable it before testing it.", back)
        return await done(request, db_session, "A ping is on its way; it appears in the delivery log.", back)

    @post("/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry")
    async def retry_delivery(
        self,
        request: HTMXRequest,
        webhooks: WebhookService,
        endpoint_id: UUID,
        delivery_id: UUID,
        db_session: AsyncSession,
    ) -> Response[Any]:
        back = _detail_url(endpoint_id)
        errors = FormErrors()
        async with catching(errors, "enabled"):
            await webhooks.retry(endpoint_id, delivery_id)
        if errors:
            return await refused(request, "The endpoint is disabled; enable it before replaying a delivery.", back)
        return await done(request, db_session, "The delivery is sent again; its new attempt appears below.", back)

    @post("/{endpoint_id:uuid}/delete")
    async def delete_webhook(
        self, request: HTMXRequest, webhooks: WebhookService, endpoint_id: UUID, db_session: AsyncSession
    ) -> Response[Any]:
        endpoint = await webhooks.get(endpoint_id)
        await webhooks.remove(endpoint_id)
        return await done(request, db_session, f"Webhook endpoint {endpoint.url} deleted.", LIST_URL)
