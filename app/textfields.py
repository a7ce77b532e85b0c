"""The one rule for text that comes in: no control characters, in every schema and every page form.

PostgreSQL refuses NUL in text (a 500 where SQLite stored it), and the other C0 controls, DEL and the C1
controls have no place in names or messages either (terminal escapes in logs, invisible look-alikes).
One-line fields refuse all of them, line breaks included; multi-line text (message content, contact
notes: the textareas) keeps tab, line feed and carriage return.

The schemas use :data:`Line`, :data:`Text` and :data:`VisibleLine`, narrowed with their own lengths::

    Name = Annotated[VisibleLine, msgspec.Meta(min_length=1, max_length=200)]

msgspec refuses a value that breaks the pattern; :func:`explain` turns its message into a sentence for
the API's field error (422). Page forms go through :func:`control_char_problem`.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

_LINE_CHARS = r"[^\x00-\x1f\x7f-\x9f]"
_TEXT_CHARS = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
# ``(?!\n)$``: Python's ``$`` also matches before a final newline (``\Z`` is not valid in JSON Schema).
LINE_PATTERN = rf"^{_LINE_CHARS}*(?!\n)$"
TEXT_PATTERN = rf"^{_TEXT_CHARS}*$"
VISIBLE_LINE_PATTERN = rf"^(?=.*\S){_LINE_CHARS}+(?!\n)$"

LINE_RULE = "Must not contain control characters or line breaks."
TEXT_RULE = "Must not contain control characters (tabs and line breaks are fine)."
VISIBLE_LINE_RULE = "Must contain visible characters, and no control characters or line breaks."

# No descriptions here: a ``description`` makes msgspec wrap the type in ``Metadata``, which code reading the
# limits with ``msgspec.inspect`` (the CSV import) would have to unwrap. The pattern documents the rule.
#: one line of text: no control characters, no line breaks
Line = Annotated[str, msgspec.Meta(pattern=LINE_PATTERN)]
#: multi-line text: no control characters but tab, line feed and carriage return
Text = Annotated[str, msgspec.Meta(pattern=TEXT_PATTERN)]
#: one line with at least one visible character (names)
VisibleLine = Annotated[str, msgspec.Meta(pattern=VISIBLE_LINE_PATTERN)]

_RULES = {LINE_PATTERN: LINE_RULE, TEXT_PATTERN: TEXT_RULE, VISIBLE_LINE_PATTERN: VISIBLE_LINE_RULE}


def pattern_rule(pattern: str, sentence: str) -> str:
    """A field pattern of its own (it cannot be combined with :data:`Line`; it must refuse control
    characters itself), with the sentence :func:`explain` gives for it."""
    _RULES[pattern] = sentence
    return pattern


_LINE_REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def explain(message: str | None) -> str | None:
    """The rule a msgspec validation message is about, as a sentence; None if it is about another rule."""
    if not message or "matching regex" not in message:
        return None
    return next((rule for pattern, rule in _RULES.items() if f"matching regex {pattern!r}" in message), None)


def control_char_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with ``value`` under the rule (naming the first refused character), or None."""
    found = (_TEXT_REFUSED if multiline else _LINE_REFUSED).search(value)
    if found is None:
        return None
    char = found.group()
    what = "a line break" if char in "\r\n" else f"a control character (U+{ord(char):04X})"
    return f"It contains {what}, which is not accepted here. {TEXT_RULE if multiline else LINE_RULE}"


# ---------------------------------------------------------------- the schemas' limits, for forms and files


def _constraints(t: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, ...]:
    """The types a field may hold, ``None``/``UNSET`` and ``Meta`` wrappers peeled off."""
    if isinstance(t, msgspec.inspect.UnionType):
        return tuple(x for member in t.types for x in _constraints(member))
    if isinstance(t, msgspec.inspect.Metadata):
        return _constraints(t.type)
    return (t,)


def max_length(struct: type[msgspec.Struct], name: str) -> int:
    """The ``max_length`` of field ``name`` of a request schema (a string's characters, a list's items),
    so that a page form or a CSV file refuses exactly what the API refuses."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        if f.name == name:
            for t in _constraints(f.type):
                limit = getattr(t, "max_length", None)
                if isinstance(limit, int):
                    return limit
    raise LookupError(f"{struct.__name__}.{name} has no max_length")


def max_lengths(struct: type[msgspec.Struct]) -> dict[str, int]:
    """The ``max_length`` of every text field of a request schema."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return {
        f.name: t.max_length
        for f in info.fields
        for t in _constraints(f.type)
        if isinstance(t, msgspec.inspect.StrType) and t.max_length is not None
    }
