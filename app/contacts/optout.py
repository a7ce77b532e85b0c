"""Opt-out keywords: a message that is only STOP (or another usual word) opts its sender out of the
whole organization; START or UNSTOP opts them back in.

The words are those carriers and Twilio honour. A keyword must be the whole message; letter case and
surrounding whitespace are ignored ("  stop\\n" is STOP, "stop it" and "STOP." are not). The keyword
message itself stays in the conversation; the pipeline applies the change with
:meth:`app.contacts.services.ContactService.set_opt_out` (``via`` = the service it came through).
"""

from __future__ import annotations

from typing import Literal

OptChange = Literal["opt_out", "opt_in"]

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP"})
#: longer messages are never a keyword (cheap rejection before normalising)
_LONGEST = 64


def opt_keyword(text: str | None) -> OptChange | None:
    """``"opt_out"`` / ``"opt_in"`` when ``text`` is an opt-out / opt-in keyword, else None."""
    if not text or len(text) > _LONGEST:
        return None
    word = text.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "opt_out"
    if word in OPT_IN_KEYWORDS:
        return "opt_in"
    return None
