"""Message content as a template over the contact's fields, rendered in a bounded Jinja2 sandbox.

The bounds (loop iterations, output size, recursion, the allowed filters) are in
:mod:`app.messaging.sandbox`. Every way a template can fail is a :class:`TemplateProblem` (422), and
:func:`render_in_thread` runs the render in a worker thread so that even the bounded work never
holds up the event loop.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import lru_cache
from typing import Any, cast

import anyio
from anyio.lowlevel import RunVar
from jinja2 import Template, TemplateError, TemplateSyntaxError, meta, nodes

from app.logging import get_logger
from app.messaging.sandbox import (
    BUDGET,
    MAX_CONTENT,
    TOO_LONG,
    Budget,
    TemplateProblem,
    bound,
    environment,
    refuse_disallowed,
)

__all__ = ["MAX_CONTENT", "VARIABLES", "TemplateProblem", "check", "render", "render_in_thread", "render_values"]

log = get_logger(__name__)

VARIABLES = ("title", "first_name", "surname")
RENDER_THREADS = 2  #: renders running at once per event loop (the others wait without holding a thread)


def _parse(content: str) -> nodes.Template:
    try:
        parsed = environment.parse(content)
        refuse_disallowed(parsed)
        unknown = sorted(meta.find_undeclared_variables(parsed) - set(VARIABLES))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"Template error on line {exc.lineno}: {exc.message}") from exc
    except RecursionError as exc:
        raise TemplateProblem("The template is nested too deeply.") from exc
    except ValueError as exc:  # e.g. a number literal longer than Python converts
        raise TemplateProblem(f"Template error: {exc}") from exc
    if unknown:
        raise TemplateProblem(f"Unknown template variable(s): {', '.join(unknown)}. Available: {', '.join(VARIABLES)}.")
    return parsed


def check(content: str) -> None:
    """Refuse syntax errors, variables other than the contact's fields, and whatever is not allowed,
    before any contact is known."""
    _parse(content)


@lru_cache(maxsize=128)  # a compiled template of 10,000 characters takes about 130 KB
def _compile(content: str) -> Template | TemplateProblem:
    """The bounded template, or why there is none (failures are cached too: a hostile one costs once)."""
    try:
        return environment.from_string(bound(_parse(content)))
    except TemplateProblem as exc:
        return exc
    except TemplateSyntaxError as exc:  # TemplateAssertionError from the code generator
        return TemplateProblem(f"Template error on line {exc.lineno}: {exc.message}")
    except (RecursionError, SyntaxError) as exc:  # Python's own limits on nesting
        log.info("template refused when compiled", error=str(exc))
        return TemplateProblem("The template is nested too deeply.")


# ------------------------------------------------------------------ rendering


def values_of(contact: Any) -> dict[str, str]:
    """The template variables of one contact; missing fields render empty."""
    return {name: getattr(contact, name, None) or "" for name in VARIABLES}


def render_values(content: str, values: dict[str, str]) -> str:
    """Render with these variables within the bounds of the sandbox; streams and stops at :data:`MAX_CONTENT`."""
    template = _compile(content)
    if isinstance(template, TemplateProblem):
        raise TemplateProblem(str(template))
    token = BUDGET.set(Budget())
    stream = cast(Generator[str, None, None], template.generate(values))
    try:
        parts: list[str] = []
        size = 0
        for part in stream:
            size += len(part)
            if size > MAX_CONTENT:
                raise TemplateProblem(TOO_LONG)
            parts.append(part)
        return "".join(parts)
    except TemplateProblem:
        raise
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError, AssertionError) as exc:
        raise TemplateProblem(f"Template error: {exc}") from exc
    except RecursionError as exc:
        raise TemplateProblem("The template is nested too deeply.") from exc
    except Exception as exc:  # anything else a template provoked is still the template's fault: 422, logged
        log.warning("template failed unexpectedly", error=repr(exc)[:300])
        raise TemplateProblem(f"The template could not be rendered ({type(exc).__name__}).") from exc
    finally:
        stream.close()
        BUDGET.reset(token)


def render(content: str, contact: Any) -> str:
    """The content for one contact (in this thread); see :func:`render_in_thread` for the event loop."""
    return render_values(content, values_of(contact))


_limiter: RunVar[anyio.CapacityLimiter] = RunVar("template_render_limiter")


def _render_limiter() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(RENDER_THREADS)
        _limiter.set(limiter)
        return limiter


async def render_in_thread(content: str, contact: Any) -> str:
    """:func:`render` in a worker thread, so that no template can hold up other requests."""
    values = values_of(contact)  # read here: the contact belongs to this thread's session
    return await anyio.to_thread.run_sync(render_values, content, values, limiter=_render_limiter())
