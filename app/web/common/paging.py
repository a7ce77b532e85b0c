"""Lists on pages: one page of a service's rows, answered as the whole page or as the table alone (htmx).

A list page is a :class:`ListView`; its handler is ``return await VIEW.render(request, service, page_number)``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from advanced_alchemy.filters import LimitOffset, OrderBy
from litestar import Request
from litestar.params import Parameter
from litestar.response import Template

from app.web.common.inputs import FormErrors
from app.web.common.responses import page, wants_fragment

T = TypeVar("T")

PAGE_SIZE = 20
NEWEST = OrderBy(field_name="created_at", sort_order="desc")
OLDEST = OrderBy(field_name="created_at", sort_order="asc")
BY_NAME = OrderBy(field_name="name", sort_order="asc")

Rows = Callable[[LimitOffset], Awaitable[tuple[Sequence[Any], int]]]


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


def provide_page_number(page: str | None = Parameter(query="page", default=None, required=False)) -> int:
    """``?page=N`` (1-based); anything unusable means the first page. Registered on the web router."""
    try:
        number = int(page or 1)
    except ValueError:
        return 1
    return min(max(number, 1), 1_000_000)


def limit_offset(number: int, size: int = PAGE_SIZE) -> LimitOffset:
    return LimitOffset(limit=size, offset=(number - 1) * size)


async def paged(
    service: Any,
    number: int,
    *filters: Any,
    url: str,
    target: str = "",
    order: OrderBy | None = NEWEST,
    params: dict[str, str] | None = None,
    rows: Rows | None = None,
) -> Page[Any]:
    """Page ``number`` of ``service.list_and_count(*filters)`` (or of ``rows``), with its links."""
    ordering = [order] if order is not None else []
    fetch = rows or (lambda window: service.list_and_count(*filters, window, *ordering))
    items, total = await fetch(limit_offset(number))
    if params is None:
        return Page(items=items, total=total, number=number, url=url, target=target)
    return FilteredPage(items=items, total=total, number=number, url=url, target=target, params=params)


@dataclass(frozen=True)
class ListView:
    """A list page: its URL, the id of its table (what pagination and filters swap), the context name of
    the rows, the whole page's template and the table's; ``form`` is the empty form of a list that has one."""

    url: str
    target: str
    name: str
    template: str
    fragment: str
    order: OrderBy | None = field(default_factory=lambda: NEWEST)
    form: Mapping[str, Any] | None = None

    async def render(
        self,
        request: Request[Any, Any, Any],
        service: Any,
        number: int,
        *filters: Any,
        status: int = 200,
        params: dict[str, str] | None = None,
        rows: Rows | None = None,
        more: Callable[[Sequence[Any]], Awaitable[dict[str, Any]]] | None = None,
        form: Mapping[str, Any] | None = None,
        errors: FormErrors | None = None,
        **context: Any,
    ) -> Template:
        """The page (with ``status``), or the table alone for an htmx request aimed at it.

        ``more(items)`` adds what depends on the rows shown (counts...); ``form``/``errors``: the list's
        form as typed and its problems (the empty form and no problems by default).
        """
        listing = await paged(
            service, number, *filters, url=self.url, target=self.target, order=self.order, params=params, rows=rows
        )
        context[self.name] = listing
        if more is not None:
            context.update(await more(listing.items))
        if self.form is not None:
            context["form"] = dict(form or self.form)
        context["errors"] = errors or FormErrors()
        if wants_fragment(request, self.target):
            return page(self.fragment, context)
        return page(self.template, context, status=status)
