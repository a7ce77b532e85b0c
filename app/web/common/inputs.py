"""Reading a submitted form, and the one way a service's refusal becomes messages next to the fields."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import IntegrityError
from litestar import Request
from litestar.datastructures import FormMultiDict
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, ValidationProblem
from app.textfields import control_char_problem

#: the page fields that are multi-line text (textareas); every other field is one line
MULTILINE_FIELDS = frozenset({"content", "notes"})
TRUE_VALUES = frozenset({"on", "1", "true", "yes"})


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

    def take(self, exc: Exception, default: str | None = None) -> None:
        """A service's refusal next to its fields: every field of a ``FieldErrors`` (``_row``: the form),
        else the field the error names, else ``default`` (None: the form as a whole)."""
        many = getattr(exc, "errors", None)
        if isinstance(many, dict) and many:
            for name, message in many.items():
                self.add(None if name == "_row" else str(name), str(message))
            return
        self.add(getattr(exc, "field", None) or default, getattr(exc, "detail", None) or str(exc) or "Refused.")


@asynccontextmanager
async def catching(
    errors: FormErrors,
    default: str | None = None,
    *,
    also: tuple[type[Exception], ...] = (),
    unique: tuple[str | None, str] | None = None,
    session: AsyncSession | None = None,
) -> AsyncIterator[None]:
    """Around the service call of a form: its refusal goes into ``errors`` instead of an error page.

    ``ValidationProblem`` (and the ``also`` types: ``Forbidden``, ``Conflict``) go next to their field, else
    ``default``. With ``unique = (field, message)``: a ``Conflict`` goes next to that field, and a duplicate
    key the database refused is rolled back (``session``) and told with ``message``. Afterwards ``errors``
    is empty exactly when the call went through.
    """
    refusals: tuple[type[Exception], ...] = (ValidationProblem, *also)
    try:
        yield
    except IntegrityError:
        if unique is None:
            raise
        if session is not None:
            await session.rollback()
        errors.add(unique[0], unique[1])
    except Conflict as exc:
        if unique is None and Conflict not in also:
            raise
        errors.take(exc, unique[0] if unique else default)
    except refusals as exc:
        errors.take(exc, default)


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


def checked(form: FormMultiDict, name: str) -> bool:
    """A checkbox (or a hidden yes/no field)."""
    return text(form, name).lower() in TRUE_VALUES


def form_values(form: FormMultiDict, name: str) -> list[str]:
    """Every string value of a repeated form field (``<select multiple>``, repeated inputs)."""
    if name not in form:
        return []
    return [v for v in form.getall(name) if isinstance(v, str)]


def parse_uuid(value: str | None) -> UUID | None:
    """A UUID from a query or form value; None when blank or malformed."""
    if not value:
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        return None
