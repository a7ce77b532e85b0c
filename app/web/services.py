"""Organization pages: the installed services (plugins), their health, and the organization's credentials.

The credentials form of a service is built from the JSON Schema of the plugin's credentials type (the
same ``credentials_schema`` that ``GET /api/v1/services/{name}`` shows): an ``enum`` becomes a select,
an integer a number input, a password-like field a password input. Saved credentials are never shown
again, not even in part: saving replaces them as a whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from advanced_alchemy.exceptions import NotFoundError
from litestar import Controller, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict
from app.messaging.links import telegram_bot, twilio_hook_url
from app.plugins import telegram, twilio
from app.providers import SERVICE_DEPENDENCIES
from app.servicehost.ratelimit import MAX_RATE, MIN_RATE
from app.servicehost.schemas import RATE_FIELD, ServiceDetail
from app.servicehost.services import CredentialService, ServiceCatalog
from app.tenants.guards import requires_org_admin, requires_organization, requires_scope
from app.tenants.principal import Principal
from app.web.common import TRUE_VALUES, FormErrors, catching, page, read_form, see_other

LIST_URL = "/services"
READ = requires_scope("servicechains:read")
NAME = "/{name:str}"
MAX_VALUE = 8192
SECRET_NAME = re.compile(r"(password|secret|token|api_?key|private)", re.IGNORECASE)
ADDRESS_LABELS = {
    "phone": "Phone number",
    "email": "E-mail address",
    "telegram_chat_id": "Telegram chat id",
    None: "The organization's own endpoint",
}

FieldKind = Literal["text", "password", "number", "select", "checkbox", "json"]


@dataclass
class CredentialField:
    """One input of a credentials form, derived from a property of the JSON Schema."""

    name: str
    label: str
    kind: FieldKind
    required: bool
    help: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)
    default: str = ""
    attrs: str = ""
    integer: bool = False


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**defs.get(ref.removeprefix("#/$defs/"), {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _default_text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    return str(value)


def credential_fields(schema: dict[str, Any] | None) -> list[CredentialField]:
    """The form fields for a credentials JSON Schema (an object schema), in the schema's order."""
    if not schema:
        return []
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    fields: list[CredentialField] = []
    for name, raw_prop in (schema.get("properties") or {}).items():
        prop = _resolve(raw_prop, defs)
        variants = [_resolve(v, defs) for v in (prop.get("anyOf") or prop.get("oneOf") or [prop])]
        main = next((v for v in variants if v.get("type") != "null"), {})
        merged = {**main, **{k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}}
        if merged.get("readOnly"):
            continue  # generated when the credentials are saved (a webhook secret…): never an input
        kind: FieldKind = "text"
        options: list[tuple[str, str]] = []
        attrs: list[str] = []
        if "enum" in merged:
            kind = "select"
            options = [(str(v), str(v)) for v in merged["enum"] if v is not None]
            if name not in required:
                options.insert(0, ("", "—"))
        elif merged.get("type") in ("integer", "number"):
            kind = "number"
            for key, attr in (("minimum", "min"), ("maximum", "max")):
                if key in merged:
                    attrs.append(f'{attr}="{merged[key]}"')
            attrs.append('step="1"' if merged.get("type") == "integer" else 'step="any"')
        elif merged.get("type") == "boolean":
            kind = "checkbox"
        elif merged.get("type") in ("object", "array"):
            kind = "json"
        elif merged.get("format") == "password" or merged.get("writeOnly") or SECRET_NAME.search(name):
            kind = "password"
        if kind in ("text", "password") and isinstance(merged.get("maxLength"), int):
            attrs.append(f'maxlength="{merged["maxLength"]}"')
        description = merged.get("description")
        fields.append(
            CredentialField(
                name=name,
                label=str(merged.get("title") or name.replace("_", " ").capitalize()),
                kind=kind,
                required=name in required,
                help=description.replace("`", "") if isinstance(description, str) else None,
                options=options,
                default=_default_text(merged.get("default")),
                attrs=" ".join(attrs),
                integer=merged.get("type") == "integer",
            )
        )
    return fields


def read_credentials(
    fields: list[CredentialField], form: FormMultiDict, errors: FormErrors
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the credentials object, what was typed — without secrets — to show the form again)."""
    data: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for f in fields:
        raw = form.get(f.name)
        value = raw[:MAX_VALUE] if isinstance(raw, str) else ""
        if f.kind != "password":
            value = value.strip()
            shown[f.name] = value
        if f.kind == "checkbox":
            data[f.name] = value.lower() in TRUE_VALUES
            continue
        if not value:
            if f.required:
                errors.add(f.name, f"Enter the {f.label.lower()}." if f.kind != "select" else "Choose one.")
            continue
        if f.kind == "number":
            try:
                data[f.name] = int(value) if f.integer else float(value)
            except ValueError:
                errors.add(f.name, "Enter a number.")
        elif f.kind == "json":
            try:
                data[f.name] = json.loads(value)
            except ValueError:
                errors.add(f.name, "Enter valid JSON.")
        elif f.kind == "select" and value not in {v for v, _ in f.options}:
            errors.add(f.name, "Choose one of the options.")
        else:
            data[f.name] = value
    return data, shown


async def hook_context(service: ServiceDetail, credentials: CredentialService, settings: Settings) -> dict[str, Any]:
    """Where the provider calls this organization back: Twilio's URL to paste into its console, and
    the webhook and bot that saving the Telegram credentials registered (never the secret)."""
    org = credentials.organization_id
    if service.name == twilio.NAME:
        return {"twilio_hook_url": twilio_hook_url(settings, org)}
    if service.name == telegram.NAME and service.has_credentials:
        return {
            "telegram_bot": await telegram_bot(
                credentials.repository.session, settings, org, registry=credentials.registry
            )
        }
    return {}


def _detail_context(
    service: ServiceDetail,
    principal: Principal,
    hooks: dict[str, Any],
    form: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    rate: str | None = None,
    rate_errors: FormErrors | None = None,
) -> dict[str, Any]:
    fields = credential_fields(service.credentials_schema)
    saved_rate = f"{service.rate_per_second:g}" if service.rate_per_second is not None else ""
    return {
        **hooks,
        "rate_field": RATE_FIELD,
        "rate_value": saved_rate if rate is None else rate,
        "rate_errors": rate_errors or FormErrors(),
        "rate_attrs": f'min="{MIN_RATE:g}" max="{service.default_rate_per_second or MAX_RATE:g}" step="any"',
        "service": service,
        "fields": fields,
        "form": form if form is not None else {f.name: f.default for f in fields},
        "errors": errors or FormErrors(),
        "can_edit": principal.is_org_admin and principal.has_scope("users:admin"),
        "address_label": ADDRESS_LABELS.get(service.address_field, service.address_field),
    }


class ServicePages(Controller):
    path = LIST_URL
    guards = [READ, requires_organization("The services page")]
    dependencies = SERVICE_DEPENDENCIES

    @get("/", name="services")
    async def list_services(
        self, catalog: ServiceCatalog, credentials: CredentialService, principal: Principal, settings: Settings
    ) -> Response[Any]:
        services = await catalog.all()
        context = {
            "services": services,
            "twilio_hook_url": twilio_hook_url(settings, credentials.organization_id),
            "address_labels": ADDRESS_LABELS,
            "can_edit": principal.is_org_admin and principal.has_scope("users:admin"),
        }
        return page("services/list.html", context)

    @get(NAME, name="service")
    async def service_detail(
        self,
        name: str,
        catalog: ServiceCatalog,
        credentials: CredentialService,
        principal: Principal,
        settings: Settings,
    ) -> Response[Any]:
        service = await catalog.get(name)
        hooks = await hook_context(service, credentials, settings)
        return page("services/detail.html", _detail_context(service, principal, hooks))

    @post(NAME + "/credentials", guards=[requires_org_admin])
    async def save_credentials(
        self,
        request: HTMXRequest,
        name: str,
        catalog: ServiceCatalog,
        credentials: CredentialService,
        principal: Principal,
        settings: Settings,
        db_session: AsyncSession,
    ) -> Response[Any]:
        service = await catalog.get(name)
        fields = credential_fields(service.credentials_schema)
        if not fields and not service.needs_credentials:
            flash(request, f"{service.title} needs no credentials.", "info")
            return await see_other(None, f"{LIST_URL}/{name}")
        form = await read_form(request, multiline=True)  # JSON fields are textareas
        errors = FormErrors()
        data, shown = read_credentials(fields, form, errors)
        if not errors:
            async with catching(errors, also=(Conflict,)):
                await credentials.put(name, data)
            if not errors:
                flash(request, f"The {service.title} credentials are checked and saved.", "success")
                return await see_other(db_session, f"{LIST_URL}/{name}")
        if errors.fields and not errors.form:
            errors.form = "The credentials were not saved: see the fields below."
        await db_session.rollback()
        hooks = await hook_context(service, credentials, settings)
        return page("services/detail.html", _detail_context(service, principal, hooks, shown, errors), status=422)

    @post(NAME + "/rate", guards=[requires_org_admin])
    async def save_rate(
        self,
        request: HTMXRequest,
        name: str,
        catalog: ServiceCatalog,
        credentials: CredentialService,
        principal: Principal,
        settings: Settings,
        db_session: AsyncSession,
    ) -> Response[Any]:
        """The organization's own sending rate on the service (empty: the service's own rate)."""
        service = await catalog.get(name)
        if not service.has_credentials:
            flash(request, f"Save the {service.title} credentials before setting a sending rate.", "info")
            return await see_other(None, f"{LIST_URL}/{name}")
        raw = str((await read_form(request)).get(RATE_FIELD) or "").strip()
        errors = FormErrors()
        value: float | None = None
        if raw:
            try:
                value = float(raw.replace(",", "."))
            except ValueError:
                errors.add(RATE_FIELD, "Enter a number of messages per second, or leave it empty.")
        if not errors:
            async with catching(errors, RATE_FIELD):
                await credentials.set_rate(name, value)
            if not errors:
                told = f"at most {value:g} messages per second" if value is not None else "the service's own rate"
                flash(request, f"{service.title} now sends for your organization at {told}.", "success")
                return await see_other(db_session, f"{LIST_URL}/{name}")
        await db_session.rollback()
        hooks = await hook_context(service, credentials, settings)
        context = _detail_context(service, principal, hooks, rate=raw[:32], rate_errors=errors)
        return page("services/detail.html", context, status=422)

    @post(NAME + "/credentials/remove", guards=[requires_org_admin])
    async def remove_credentials(
        self,
        request: HTMXRequest,
        name: str,
        catalog: ServiceCatalog,
        credentials: CredentialService,
        db_session: AsyncSession,
    ) -> Response[Any]:
        service = await catalog.get(name)
        try:
            await credentials.remove(name)
        except NotFoundError:
            flash(request, f"There were no {service.title} credentials to delete.", "info")
            return await see_other(None, f"{LIST_URL}/{name}")
        message = f"The {service.title} credentials are deleted; chains skip {service.title} until new ones are saved."
        flash(request, message, "success")
        return await see_other(db_session, f"{LIST_URL}/{name}")
