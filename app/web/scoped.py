"""Helpers shared by the organization's messaging pages: contacts, categories, services, chains, messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode
from uuid import UUID

from advanced_alchemy.filters import OrderBy
from litestar.datastructures import FormMultiDict
from litestar.exceptions import PermissionDeniedException

from app.tenants.principal import Principal
from app.web.common import FormErrors, Page, page

T = TypeVar("T")

BY_NAME = OrderBy(field_name="name", sort_order="asc")
OLDEST = OrderBy(field_name="created_at", sort_order="asc")

STATE_LABELS = {
    "MSG_PENDING": "Pending",
    "MSG_SENDING": "Sending",
    "MSG_SENT": "Sent",
    "MSG_DELIVERED_SERVICE": "Delivered to service",
    "MSG_DELIVERED_USER": "Delivered",
    "MSG_READ": "Read",
    "MSG_REPLIED": "Replied",
    "MSG_FAILED": "Failed",
    "MSG_RECEIVED": "Received",
}
IN_FLIGHT_STATES = frozenset({"MSG_PENDING", "MSG_SENDING"})


def org_id(principal: Principal, what: str = "This page") -> UUID:
    """The caller's organization; sysadmins belong to none, so these pages are not theirs (403)."""
    if principal.organization_id is None:
        raise PermissionDeniedException(
            f"{what} belongs to an organization and sysadmins have none: sign in as a member of one."
        )
    return principal.organization_id


@dataclass
class FilteredPage(Page[T]):
    """A :class:`Page` whose links keep the list's filters (``?q=…&page=2``)."""

    params: dict[str, str] = field(default_factory=dict)

    def href(self, number: int) -> str:
        query = {k: v for k, v in self.params.items() if v}
        query["page"] = str(number)
        return f"{self.url}?{urlencode(query)}"

    @property
    def filtered(self) -> bool:
        return any(self.params.values())


def parse_uuid(value: str | None) -> UUID | None:
    """A UUID from a query or form value; None when blank or malformed."""
    if not value:
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        return None


def form_values(form: FormMultiDict, name: str) -> list[str]:
    """Every string value of a repeated form field (``<select multiple>``, repeated inputs)."""
    if name not in form:
        return []
    return [v for v in form.getall(name) if isinstance(v, str)]


def field_errors(exc: Exception, errors: FormErrors, default_field: str | None = None) -> None:
    """Put the field messages of a service's validation error next to the fields (or on the form)."""
    many = getattr(exc, "errors", None)
    if isinstance(many, dict) and many:
        for name, message in many.items():
            errors.add(None if name == "_row" else str(name), str(message))
        return
    name = getattr(exc, "field", None) or default_field
    detail = getattr(exc, "detail", None) or str(exc)
    errors.add(name, detail)


def flash_fragment(message: str, category: str = "error", status: int = 200) -> Any:
    """For an HTMX action that cannot be applied: show the message in the page's message area."""
    return page(
        "partials/_flash_message.html",
        {"message": message, "category": category},
        status=status,
        headers={"HX-Retarget": "#flashes", "HX-Reswap": "innerHTML"},
    )
