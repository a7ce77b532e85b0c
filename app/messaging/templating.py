"""Message content as a template over the contact's fields, rendered in a Jinja2 sandbox."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

VARIABLES = ("title", "first_name", "surname")
MAX_CONTENT = 10_000


class _Sandbox(SandboxedEnvironment):
    """The sandbox, also refusing arithmetic that would build huge values (``"x" * 10**9``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the ** operator is not allowed")
        if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if not isinstance(times, int) or len(seq) * max(times, 0) > MAX_CONTENT:
                raise SecurityError("the result would be too long")
        return super().call_binop(context, operator, left, right)


_env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateProblem(Exception):
    """The content is not a valid template over the contact's fields (422)."""


def check(content: str) -> None:
    """Refuse syntax errors and variables other than the contact's fields, before any contact is known."""
    try:
        parsed = _env.parse(content)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"Template error on line {exc.lineno}: {exc.message}") from exc
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(VARIABLES))
    if unknown:
        raise TemplateProblem(f"Unknown template variable(s): {', '.join(unknown)}. Available: {', '.join(VARIABLES)}.")


@lru_cache(maxsize=512)
def _compiled(content: str) -> Template:
    check(content)
    return _env.from_string(content)


def render(content: str, contact: Any) -> str:
    """The content for one contact; missing fields render empty. Compiled once per distinct content."""
    template = _compiled(content)
    values = {name: getattr(contact, name, None) or "" for name in VARIABLES}
    try:
        text = template.render(values)
    except (UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateProblem(f"Template error: {exc}") from exc
    if len(text) > MAX_CONTENT:
        raise TemplateProblem(f"The rendered content is longer than {MAX_CONTENT} characters.")
    return text
