"""Helpers shared by the page controllers: forms, pagination, full page or fragment, redirects."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from advanced_alchemy.filters import LimitOffset, OrderBy
from litestar import Request, Response
from litestar.datastructures import FormMultiDict
from litestar.exceptions import PermissionDeniedException
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationProblem
from app.tenants.guards import principal_of
from app.tenants.principal import Principal
from app.textfields import control_char_problem

T = TypeVar("T")

PAGE_SIZE = 20
NEWEST = OrderBy(field_name="created_at", sort_order="desc")
ROLE_LABELS = {"sysadmin": "Sysadmin", "org_admin": "Organization admin", "user": "User"}


# ---------------------------------------------------------------- pagination


@dataclass
class Page(Generic[T]):
    """One page of a list, with what the pagination partial needs."""

    items: Sequence[T]
    total: int
    number: int
    size: int = PAGE_SIZE
    url: str = ""
    target: str = ""

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        return 0 if self.total == 0 else (self.number - 1) * self.size + 1

    @property
    def last_index(self) -> int:
        return min(self.total, self.number * self.size)

    def href(self, number: int) -> str:
        return f"{self.url}?page={number}"


def provide_page_number(page: str | None = Parameter(query="page", default=None, required=False)) -> int:
    """``?page=N`` (1-based); anything unusable means the first page."""
    try:
        number = int(page or 1)
    except ValueError:
        return 1
    return min(max(number, 1), 1_000_000)


def limit_offset(number: int, size: int = PAGE_SIZE) -> LimitOffset:
    return LimitOffset(limit=size, offset=(number - 1) * size)


# ---------------------------------------------------------------- requests and responses


def provide_web_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


def org_of(principal: Principal) -> Any:
    """The caller's organization id; sysadmins have none and manage organizations from their pages."""
    if principal.organization_id is None:
        raise PermissionDeniedException(
            "Sysadmins belong to no organization: manage an organization's users from its page under Organizations."
        )
    return principal.organization_id


def wants_fragment(request: HTMXRequest, target: str | None = None) -> bool:
    """True for an HTMX request that swaps part of a page (not a boosted navigation or a history restore)."""
    htmx = request.htmx
    if not htmx or htmx.boosted or htmx.history_restore_request:
        return False
    return target is None or htmx.target == target


@dataclass
class FormErrors:
    """Field name -> message, plus a message for the form as a whole."""

    fields: dict[str, str] = field(default_factory=dict)
    form: str | None = None

    def __bool__(self) -> bool:
        return bool(self.fields or self.form)

    def add(self, name: str | None, message: str) -> None:
        if name:
            self.fields.setdefault(name, message)
        else:
            self.form = message

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


#: the page fields that are multi-line text (textareas); every other field is one line
MULTILINE_FIELDS = frozenset({"content", "notes"})


async def read_form(
    request: Request[Any, Any, Any], multiline: Collection[str] | bool = MULTILINE_FIELDS
) -> FormMultiDict:
    """The submitted form, refused (a 422 naming the field) if a value holds a control character.

    ``multiline``: the fields that may hold tabs and line breaks (True: every field).
    """
    form = await request.form()
    for name, value in form.multi_items():
        if isinstance(value, str):
            lines = multiline if isinstance(multiline, bool) else name in multiline
            if problem := control_char_problem(value, multiline=lines):
                raise ValidationProblem(f"The field “{name}” was refused. {problem}", name)
    return form


def text(form: FormMultiDict, name: str, max_length: int = 1000) -> str:
    value = form.get(name)
    return value.strip()[:max_length] if isinstance(value, str) else ""


def secret_text(form: FormMultiDict, name: str) -> str:
    """A password field: never stripped, bounded so hashing cannot be abused."""
    value = form.get(name)
    return value[:4096] if isinstance(value, str) else ""


def page(template: str, context: dict[str, Any], status: int = 200, **kwargs: Any) -> Template:
    return Template(template_name=template, context=context, status_code=status, **kwargs)


async def see_other(db_session: AsyncSession | None, url: str) -> Redirect:
    """Commit, then redirect (303) to a page: the session plugin only commits on 2xx by itself."""
    if db_session is not None:
        await db_session.commit()
    return Redirect(url, status_code=303)


def safe_local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site (no scheme, no host, no ``//`` or backslash tricks)."""
    if not value:
        return default
    value = value.strip()
    if not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def no_store(response: Response[Any]) -> Response[Any]:
    """Pages that show a secret once must not be kept by caches."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def add_vary(response: Response[Any]) -> Response[Any]:
    """The same URL answers a full page or a fragment depending on ``HX-Request``."""
    vary = response.headers.get("Vary")
    if not vary:
        response.headers["Vary"] = "HX-Request"
    elif "hx-request" not in vary.lower():
        response.headers["Vary"] = f"{vary}, HX-Request"
    return response
