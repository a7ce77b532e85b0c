"""The opt-out keyword matcher (pure: no database)."""

from __future__ import annotations

import pytest

from app.contacts.optout import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, opt_keyword


@pytest.mark.parametrize("word", sorted(OPT_OUT_KEYWORDS))
def test_every_opt_out_word_in_any_case_and_spacing(word: str) -> None:
    for text in (word, word.lower(), word.title(), f"  {word.lower()}  ", f"\t{word}\r\n", f"\u00a0{word}\u2003"):
        assert opt_keyword(text) == "opt_out", repr(text)


@pytest.mark.parametrize("word", sorted(OPT_IN_KEYWORDS))
def test_every_opt_in_word(word: str) -> None:
    for text in (word, word.lower(), f" {word.capitalize()}\n"):
        assert opt_keyword(text) == "opt_in", repr(text)


def test_the_usual_words_are_all_there() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"} == OPT_OUT_KEYWORDS
    assert {"START", "UNSTOP"} == OPT_IN_KEYWORDS


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "stop it",
        "Please STOP",
        "STOP.",
        "S T O P",
        "stopp",
        "don't stop",
        "start now",
        "/start",
        "STOP" * 20,
    ],
)
def test_anything_else_is_no_keyword(text: str | None) -> None:
    assert opt_keyword(text) is None
