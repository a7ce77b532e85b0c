"""The bounded Jinja2 sandbox message templates run in: what a template may use, and how much.

A template is user input, so nothing it does may cost more than a bounded amount of work or memory
(decision record 0013):

- at most :data:`MAX_ITERATIONS` loop iterations and macro calls in one render, all loops together,
  and :data:`DEADLINE` seconds of wall-clock time, both checked at every iteration, call and output;
- no value longer than :data:`MAX_CONTENT` characters, refused *before* it is built (``*``, ``+``,
  ``~``, ``%`` formatting, every filter and string method); all text produced in one render
  (set blocks and macros included) at most :data:`MAX_PRODUCED`;
- no recursion (recursive loops are refused when compiled, a macro calling itself when it happens),
  macro calls nested at most :data:`MAX_CALL_DEPTH` deep, lists and dicts holding only text and numbers;
- only the filters, tests, string methods and globals listed here (an allow-list), no include, import,
  extends or blocks.

:func:`refuse_disallowed` checks a parsed template, :func:`bound` rewrites it so that loops, output,
``~`` and literals pass through the hidden ``voluble_*`` filters, and :data:`BUDGET` holds what the
render running in this thread has spent. Everything is refused with a :class:`TemplateProblem`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, ItemsView, KeysView, Mapping, Sized, ValuesView
from contextvars import ContextVar
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, filters, nodes, pass_context, pass_environment
from jinja2.runtime import Context, LoopContext, Macro, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


MAX_CONTENT = 10_000  #: characters of the rendered message, and of any one value
MAX_ITERATIONS = 10_000  #: loop iterations and macro calls of one render, all loops together
MAX_PRODUCED = 100_000  #: characters of text produced in one render, set blocks and macros included
MAX_CALL_DEPTH = 20  #: macro calls nested in one another
MAX_INT_BITS = 256  #: a product may have at most this many bits (about 77 digits)
DEADLINE = 1.0  #: seconds one render may take

FILTER_STEPS = "loop iterations (items that filters go through count too)"
TOO_LONG = f"The rendered message would exceed {MAX_CONTENT} characters."

#: filters that make text from their value (weighed first) and cannot make it much longer
_TEXT_FILTERS: dict[str, Callable[..., Any]] = {
    "capitalize": filters.do_capitalize,
    "e": filters.escape,
    "escape": filters.escape,
    "lower": filters.do_lower,
    "string": filters.soft_str,
    "striptags": filters.do_striptags,
    "title": filters.do_title,
    "trim": filters.do_trim,
    "truncate": filters.do_truncate,
    "upper": filters.do_upper,
    "wordcount": filters.do_wordcount,
}


@pass_environment
def _sort(
    environment: Any, value: Any, reverse: bool = False, case_sensitive: bool = False, attribute: Any = None
) -> Any:
    """Jinja's ``sort`` without the list it builds as each item's key (work for the garbage collector)."""
    key = filters.make_attrgetter(environment, attribute, postprocess=None if case_sensitive else filters.ignore_case)
    return sorted(value, key=key, reverse=reverse)


#: filters that go through every item of their value: each item is a step of the budget
_COLLECTION_FILTERS: dict[str, Callable[..., Any]] = {
    "first": filters.sync_do_first,
    "last": filters.do_last,
    "list": filters.sync_do_list,
    "max": filters.do_max,
    "min": filters.do_min,
    "reverse": filters.do_reverse,
    "sort": _sort,
    "unique": filters.do_unique,
}
_SCALAR_FILTERS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "count": len,
    "d": filters.do_default,
    "default": filters.do_default,
    "float": filters.do_float,
    "int": filters.do_int,
    "length": len,
    "round": filters.do_round,
}
ALLOWED_TESTS = _names(
    "defined undefined none boolean true false integer float number string sequence mapping "
    "iterable lower upper even odd divisibleby eq equalto ne lt lessthan le ge gt greaterthan in "
    "sameas == != < <= > >="
)
STR_METHODS = _names(
    "capitalize casefold count endswith find isalnum isalpha isdecimal isdigit islower isnumeric "
    "isspace istitle isupper lower lstrip removeprefix removesuffix replace rfind rsplit rstrip "
    "split splitlines startswith strip swapcase title upper"
)
LOOP_ATTRIBUTES = _names(
    "index index0 revindex revindex0 first last length depth depth0 previtem nextitem cycle changed"
)
DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_SCALARS = (str, int, float, type(None), Undefined)


class TemplateProblem(Exception):
    """The content is not a valid template over the contact's fields, or does too much (422)."""


# ------------------------------------------------------------------ the budget of one render


class Budget:
    """What one render has spent so far; lives in :data:`BUDGET` while the render runs."""

    __slots__ = ("calls", "deadline", "produced", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.produced = 0
        self.calls: list[Any] = []  # code objects of the macros being called, innermost last
        self.deadline = time.monotonic() + DEADLINE

    def step(self, what: str = "loop iterations", steps: int = 1) -> None:
        self.steps += steps
        if self.steps > MAX_ITERATIONS:
            raise TemplateProblem(f"The template does too much work: more than {MAX_ITERATIONS} {what}.")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateProblem(f"The template takes too long to render (more than {DEADLINE:g} s).")


BUDGET: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


def _current() -> Budget:
    budget = BUDGET.get()
    if budget is None:  # only render() runs templates; this is a programming error, not user input
        raise RuntimeError("a message template ran outside render()")
    return budget


# ------------------------------------------------------------------ sizes


def weigh(value: Any, limit: int = MAX_CONTENT) -> int:
    """About how many characters ``str(value)`` has, refusing (early, before building it) more than ``limit``."""
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, bool) or value is None:
        size = 5
    elif isinstance(value, int):
        size = value.bit_length() // 3 + 2
    elif isinstance(value, Mapping | list | tuple | set | frozenset | range | KeysView | ValuesView | ItemsView):
        size = 2
        for item in value.items() if isinstance(value, Mapping) else value:
            size += weigh(item, limit - size) + 2
            if size > limit:
                break
    else:  # numbers, the loop, macros: a short repr
        size = 32
    if size > limit:
        raise TemplateProblem(TOO_LONG)
    return size


def bounded(result: Any) -> Any:
    if isinstance(result, str) and len(result) > MAX_CONTENT:
        raise TemplateProblem(TOO_LONG)
    return result


def _number(name: str, value: Any, limit: int = MAX_CONTENT) -> int:
    if not isinstance(value, int) or abs(value) > limit:
        raise TemplateProblem(f"{name} must be a whole number of at most {limit}, not {str(value)[:20]!r}.")
    return value


def check_replace(s: str, old: str, new: str, count: Any = None) -> None:
    times = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    if len(s) + times * (len(new) - len(old)) > MAX_CONTENT:
        raise TemplateProblem(TOO_LONG)


def percent_format(fmt: str, args: Any) -> str:
    """``fmt % args`` with every width and precision counted first (``'%300000000s'`` is refused)."""
    _current().check_time()
    total, i, n = 0, 0, len(fmt)
    while (i := fmt.find("%", i)) != -1:
        i += 1
        if i < n and fmt[i] == "(":  # a mapping key, with nested parentheses as Python reads it
            depth = 1
            while depth and (i := i + 1) < n:
                depth += {"(": 1, ")": -1}.get(fmt[i], 0)
            i += 1
        while i < n and fmt[i] in "-+ #0":
            i += 1
        for allowed_dot in (False, True):
            if allowed_dot:
                if i >= n or fmt[i] != ".":
                    break
                i += 1
            if i < n and fmt[i] == "*":
                raise TemplateProblem("A '*' width or precision in % formatting is not allowed.")
            start = i
            while i < n and fmt[i] in "0123456789":
                i += 1
            if i - start > 6:
                raise TemplateProblem(TOO_LONG)
            total += int(fmt[start:i] or 0)
        i += 1
    if total > MAX_CONTENT:
        raise TemplateProblem(f"The widths in this % format add up to {total}; at most {MAX_CONTENT}.")
    weigh(args)
    return bounded(fmt % args)


# ------------------------------------------------------------------ filters


def _guard(name: str, func: Callable[..., Any], check: Callable[[dict[str, Any]], None] | None) -> Callable[..., Any]:
    """``func`` with its text argument weighed, ``check`` run on its arguments first, its result bounded."""
    signature = inspect.signature(func)
    value_index = 0 if _PassArg.from_obj(func) is None else 1
    value_name = list(signature.parameters)[value_index]

    @wraps(func)  # keeps jinja_pass_arg
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _current().check_time()
        try:
            arguments = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TemplateProblem(f"Filter '{name}': {exc}.") from exc
        arguments.apply_defaults()
        values = arguments.arguments
        if name in _COLLECTION_FILTERS:
            if not isinstance(values[value_name], Sized):
                values[value_name] = list(values[value_name])
            _current().step(FILTER_STEPS, len(values[value_name]))
        elif check is not None or name in _TEXT_FILTERS:
            weigh(values[value_name])
        if check is not None:
            check(values)
        return bounded(func(*arguments.args, **arguments.kwargs))

    return guarded


def _check_center(a: dict[str, Any]) -> None:
    _number("The center width", a["width"])


def _check_indent(a: dict[str, Any]) -> None:
    width = len(a["width"]) if isinstance(a["width"], str) else _number("The indent width", a["width"])
    if len(str(a["s"])) + (str(a["s"]).count("\n") + 1) * width > MAX_CONTENT:
        raise TemplateProblem(TOO_LONG)


def _check_wordwrap(a: dict[str, Any]) -> None:
    width = max(_number("The wordwrap width", a["width"]), 1)
    text, wrap = str(a["s"]), a["wrapstring"] or "\n"
    if len(text) + (len(text) // width + text.count("\n") + 1) * len(str(wrap)) > MAX_CONTENT:
        raise TemplateProblem(TOO_LONG)


@pass_context
def _join(context: Context, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    """The ``join`` filter, with the length of its result counted item by item before it is built."""
    _current().check_time()
    items = list(value)
    _current().step(FILTER_STEPS, len(items))
    if attribute is not None:
        getter = filters.make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    size = max(len(items) - 1, 0) * weigh(d)
    for item in items:
        size += weigh(item, MAX_CONTENT - size)
    return bounded(filters.sync_do_join(context.eval_ctx, items, d))


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise TemplateProblem("Filter 'format': give either positional or keyword arguments, not both.")
    return percent_format(str(value), kwargs or args)


_ARGUMENT_CHECKS: dict[str, tuple[Callable[..., Any], Callable[[dict[str, Any]], None]]] = {
    "center": (filters.do_center, _check_center),
    "indent": (filters.do_indent, _check_indent),
    "replace": (filters.do_replace, lambda a: check_replace(str(a["s"]), str(a["old"]), str(a["new"]), a["count"])),
    "wordwrap": (filters.do_wordwrap, _check_wordwrap),
}
_PLAIN_FILTERS = {**_TEXT_FILTERS, **_COLLECTION_FILTERS, **_SCALAR_FILTERS}
ALLOWED_FILTERS = frozenset({*_PLAIN_FILTERS, *_ARGUMENT_CHECKS, "format", "join"})


@pass_context
def _loop(context: Context, iterable: Any) -> Any:
    """Wraps the iterable of every ``{% for %}``: one step of the budget per item."""
    budget = _current()
    for item in iterable:
        budget.step()
        yield item


@pass_context
def _out(context: Context, value: Any) -> str:
    """Wraps every piece of output, also text captured by set blocks, macros and filter blocks."""
    budget = _current()
    budget.check_time()
    weigh(value)  # (a list's text is weighed before it is built; an object's repr is short)
    text = bounded(value if isinstance(value, str) else str(value))
    budget.produced += len(text)
    if budget.produced > MAX_PRODUCED:
        raise TemplateProblem(f"The template produces more than {MAX_PRODUCED} characters of text in all.")
    return text


@pass_context
def _concat(context: Context, *values: Any) -> str:
    """The ``~`` operator, with its result weighed before it is built."""
    _current().check_time()
    weigh(values)
    return bounded((markup_join if context.eval_ctx.autoescape else str_join)(values))


@pass_context
def _flat(context: Context, value: Any) -> Any:
    """List, tuple and dict literals hold only text and numbers (nested ones could be exponentially large)."""
    items = list(value.values()) if isinstance(value, dict) else value
    if not all(isinstance(item, _SCALARS) for item in items):
        raise TemplateProblem("Lists and dicts in a template may hold only text and numbers.")
    return value


_HIDDEN = {"voluble_loop": _loop, "voluble_out": _out, "voluble_concat": _concat, "voluble_flat": _flat}


# ------------------------------------------------------------------ the sandbox


def _range(*args: Any) -> range:
    numbers = range(*args)
    try:
        too_long = len(numbers) > MAX_ITERATIONS
    except OverflowError:
        too_long = True
    if too_long:
        raise TemplateProblem(f"The template does too much work: more than {MAX_ITERATIONS} loop iterations.")
    return numbers


def _is_str_replace(obj: Any) -> bool:
    return getattr(obj, "__name__", None) == "replace" and isinstance(getattr(obj, "__self__", None), str)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with only the allowed attributes, and every operator that can build a large value bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _current().check_time()
        if operator == "**":
            raise TemplateProblem("The ** operator is not allowed in templates.")
        if operator == "%" and isinstance(left, str):
            return percent_format(left, right)
        if operator == "+" and not isinstance(left, int | float):
            weigh((left, right))
        if operator == "*":
            if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
                seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
                if isinstance(times, int) and weigh(seq) * max(times, 0) > MAX_CONTENT:
                    raise TemplateProblem(TOO_LONG)
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise TemplateProblem("Numbers this large are not allowed in templates.")
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in STR_METHODS
        if isinstance(obj, LoopContext):
            return attr in LOOP_ATTRIBUTES
        return isinstance(obj, dict) and attr in DICT_METHODS

    def wrap_str_format(self, value: Any) -> None:
        """``str.format`` and ``format_map`` are not on the allow-list (their widths are unbounded)."""
        return None

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise TemplateProblem(f"'{attribute}' is not available in message templates.")

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _current().check_time()
        if not isinstance(obj, Macro):
            if _is_str_replace(obj) and len(args) >= 2:  # (with fewer, str.replace says what is missing)
                check_replace(obj.__self__, str(args[0]), str(args[1]), *args[2:3])
            return bounded(super().call(context, obj, *args, **kwargs))
        budget = _current()
        code = obj._func.__code__
        if code in budget.calls:
            raise TemplateProblem(f"Templates may not recurse: the macro '{obj.name}' calls itself.")
        if len(budget.calls) >= MAX_CALL_DEPTH:
            raise TemplateProblem(f"Macro calls may not nest more than {MAX_CALL_DEPTH} deep.")
        budget.step("loop iterations and macro calls")
        budget.calls.append(code)
        try:
            return super().call(context, obj, *args, **kwargs)
        finally:
            budget.calls.pop()


environment = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
environment.globals.clear()
environment.globals["range"] = _range
environment.filters = {
    **{name: _guard(name, f, None) for name, f in _PLAIN_FILTERS.items()},
    **{name: _guard(name, f, check) for name, (f, check) in _ARGUMENT_CHECKS.items()},
    "format": _format,
    "join": _join,
    **_HIDDEN,
}
environment.tests = {name: test for name, test in TESTS.items() if name in ALLOWED_TESTS}


# ------------------------------------------------------------------ checking and rewriting a template


_FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Extends: "Message templates cannot extend other templates.",
    nodes.Include: "Message templates cannot include other templates.",
    nodes.Import: "Message templates cannot import other templates.",
    nodes.FromImport: "Message templates cannot import other templates.",
    nodes.Block: "Blocks ({% block %}) are not available in message templates.",
}


def refuse_disallowed(parsed: nodes.Template) -> None:
    """Refuse filters, tests and tags outside the allow-list, and recursive loops."""
    kinds: tuple[type[nodes.Node], ...] = (nodes.Filter, nodes.Test, nodes.For, *_FORBIDDEN)
    node: nodes.Node
    for node in parsed.find_all(kinds):
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            names = ", ".join(sorted(ALLOWED_FILTERS))
            raise TemplateProblem(f"Unknown filter '{node.name}' on line {node.lineno}. Available: {names}.")
        if isinstance(node, nodes.Test) and node.name not in ALLOWED_TESTS:
            raise TemplateProblem(f"Unknown test '{node.name}' on line {node.lineno}.")
        if isinstance(node, nodes.For) and node.recursive:
            raise TemplateProblem(f"Templates may not recurse: a recursive for loop on line {node.lineno}.")
        if type(node) in _FORBIDDEN:
            raise TemplateProblem(_FORBIDDEN[type(node)])


def _hidden_filter(node: nodes.Node, name: str, *args: nodes.Node) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)


class _Bounds(NodeTransformer):
    """Rewrites a checked template so that loops, output, ``~`` and literals go through the hidden filters."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _hidden_filter(node.iter, "voluble_loop")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        node.nodes = [_hidden_filter(child, "voluble_out") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return _hidden_filter(node.nodes[0], "voluble_concat", *node.nodes[1:])

    def _literal(self, node: nodes.List | nodes.Tuple | nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return node if getattr(node, "ctx", "load") != "load" else _hidden_filter(node, "voluble_flat")

    visit_List = visit_Tuple = visit_Dict = _literal


def bound(parsed: nodes.Template) -> nodes.Template:
    """The checked template rewritten to run within the bounds (the tree is changed in place)."""
    rewritten = _Bounds().visit(parsed)
    rewritten.set_environment(environment)
    return rewritten
