"""Helpers shared by the page controllers.

* :mod:`.paging` — :class:`ListView` (a list page: the whole page or its table), :class:`Page`, orderings;
* :mod:`.inputs` — reading forms, :class:`FormErrors` and :func:`catching` (a service's refusal next to
  the fields);
* :mod:`.responses` — :func:`page`, :func:`wants_fragment`, :func:`done` / :func:`refused` (the tails of
  an action), redirects and headers.
"""

from app.web.common.inputs import (
    MULTILINE_FIELDS,
    TRUE_VALUES,
    FormErrors,
    catching,
    checked,
    form_values,
    parse_uuid,
    read_form,
    secret_text,
    text,
)
from app.web.common.paging import (
    BY_NAME,
    NEWEST,
    OLDEST,
    PAGE_SIZE,
    FilteredPage,
    ListView,
    Page,
    limit_offset,
    paged,
    provide_page_number,
)
from app.web.common.responses import (
    OOB_FLASHES,
    add_vary,
    done,
    flash_fragment,
    no_store,
    page,
    provide_web_principal,
    refused,
    safe_local_path,
    see_other,
    wants_fragment,
)

__all__ = [
    "BY_NAME",
    "MULTILINE_FIELDS",
    "NEWEST",
    "OLDEST",
    "OOB_FLASHES",
    "PAGE_SIZE",
    "TRUE_VALUES",
    "FilteredPage",
    "FormErrors",
    "ListView",
    "Page",
    "add_vary",
    "catching",
    "checked",
    "done",
    "flash_fragment",
    "form_values",
    "limit_offset",
    "no_store",
    "page",
    "paged",
    "parse_uuid",
    "provide_page_number",
    "provide_web_principal",
    "read_form",
    "refused",
    "safe_local_path",
    "secret_text",
    "see_other",
    "text",
    "wants_fragment",
]
