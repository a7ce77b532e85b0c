"""Opt-out and opt-in keywords: a contact who texts STOP through any service is opted out of the
whole organization; START opts them back in (case and surrounding spaces ignored)."""

from __future__ import annotations

from typing import Literal

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})


def opt_keyword(content: str) -> Literal["out", "in"] | None:
    """``"out"`` for an opt-out keyword, ``"in"`` for an opt-in one, None for any other message.

    Only a message that is the keyword alone counts ("stop " does, "please stop texting me" does not),
    as carriers do; a trailing full stop or exclamation mark is forgiven."""
    word = content.strip().rstrip(".!").strip().upper()
    if word in OPT_OUT_WORDS:
        return "out"
    if word in OPT_IN_WORDS:
        return "in"
    return None
