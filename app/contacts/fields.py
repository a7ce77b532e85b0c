"""Validation and normalisation of contact fields, shared by the services, the CSV import and pages.

Each ``normalise_*`` function takes raw text and returns the stored form, or raises
:class:`FieldError` with a message meant for the person who typed it.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

log = logging.getLogger(__name__)

DEFAULT_REGION_ENV = "VOLUBLE_DEFAULT_REGION"

# Control characters: never in a one-line field; notes may hold tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(
    rf"^(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@"
    r"(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59}))$"
)
_TELEGRAM = re.compile(r"^(?:-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")


class FieldError(ValueError):
    """A field value that cannot be accepted; the message is shown next to the field."""


@lru_cache(maxsize=1)
def configured_region() -> str | None:
    """The region of ``VOLUBLE_DEFAULT_REGION`` (ISO 3166 alpha-2, e.g. ``GB``), or None.

    Without it, phone numbers must be given in international format (``+44 …``). An unknown region
    is logged and ignored rather than guessed.
    """
    raw = os.environ.get(DEFAULT_REGION_ENV, "").strip().upper()
    if not raw:
        return None
    if raw not in phonenumbers.SUPPORTED_REGIONS:
        log.warning("ignoring %s=%r: not a region phonenumbers knows", DEFAULT_REGION_ENV, raw)
        return None
    return raw


def check_region(region: str) -> str:
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise FieldError(f"Unknown region {region!r}; use a two-letter country code such as GB or US.")
    return code


def has_control_chars(value: str) -> bool:
    return _CONTROL.search(value) is not None


def clean_text(value: str | None, *, multiline: bool = False) -> str | None:
    """Trimmed text, None for blank; control characters are refused."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(text):
        raise FieldError("Must not contain control characters.")
    return text


def normalise_phone(value: str, region: str | None = None) -> str:
    """The number in E.164 (``+442079460958``).

    National notation (``020 7946 0958``) is accepted only when a region is given (the argument or
    ``VOLUBLE_DEFAULT_REGION``); otherwise the number must start with ``+`` and the country code.
    Numbers that libphonenumber does not consider valid for their country are refused.
    """
    text = value.strip()
    if _CONTROL.search(text):
        raise FieldError("This is not a phone number.")
    region = region or configured_region()
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            if not text.startswith("+") and region is None:
                raise FieldError(
                    "Give the number in international format: + and the country code, e.g. +44 20 7946 0958."
                ) from None
            raise FieldError("Unknown country code.") from None
        if exc.error_type in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
            raise FieldError("This phone number is too short.") from None
        if exc.error_type == NumberParseException.TOO_LONG:
            raise FieldError("This phone number is too long.") from None
        raise FieldError("This is not a phone number.") from None
    if number.extension:
        raise FieldError("Extensions cannot be reached by messages; give the number without one.")
    if not phonenumbers.is_valid_number(number):
        raise FieldError("This is not a valid phone number for its country.")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    """A lowercased address; deliberately plain ASCII ``local@domain.tld`` (no quoted parts, no IP hosts)."""
    text = value.strip().lower()
    match = _EMAIL.match(text)
    if len(text) > 254 or match is None or len(match["local"]) > 64:
        raise FieldError("This is not a valid e-mail address.")
    return text


def normalise_telegram_chat_id(value: str) -> str:
    text = value.strip()
    if not _TELEGRAM.match(text):
        raise FieldError("A Telegram chat id is a number (e.g. 123456789 or -1001234567890) or a @username.")
    return text
