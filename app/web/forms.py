"""Reading and checking the fields of the pages' forms (the services check the business rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from litestar.datastructures import FormMultiDict

from app.tenants.models import Plan, Role
from app.tenants.principal import ALL_SCOPES
from app.tenants.schemas import UserCreate
from app.tenants.security import password_problem
from app.textfields import max_length
from app.web.common import FormErrors, secret_text, text

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TOKEN_EXPIRY_CHOICES = (7, 30, 90, 365)
# the request schemas' limits (every name of app.tenants.schemas is a ``Name``)
EMAIL_LIMIT = max_length(UserCreate, "email")
NAME_LIMIT = max_length(UserCreate, "name")


def check_email(value: str, errors: FormErrors, name: str = "email") -> None:
    if not value:
        errors.add(name, "Enter an email address.")
    elif len(value) > EMAIL_LIMIT or not EMAIL.match(value):
        errors.add(name, "Enter a valid email address, like name@example.com.")


def check_name(value: str, errors: FormErrors, name: str = "name", what: str = "a name") -> None:
    if not value:
        errors.add(name, f"Enter {what}.")
    elif len(value) > NAME_LIMIT:
        errors.add(name, f"Keep it under {NAME_LIMIT} characters.")


def new_user_fields(form: FormMultiDict, roles: Iterable[Role], errors: FormErrors) -> dict[str, Any]:
    """email, name, password and role of a new user; problems go to ``errors``."""
    email = text(form, "email", 400).lower()
    name = text(form, "name", 400)
    password = secret_text(form, "password")
    allowed = {r.value for r in roles}
    role = text(form, "role")
    if not role and len(allowed) == 1:
        role = next(iter(allowed))
    check_email(email, errors)
    check_name(name, errors, what="the person's name")
    problem = password_problem(password)
    if problem:
        errors.add("password", problem)
    if role not in allowed:
        errors.add("role", "Choose a role.")
    return {"email": email, "name": name, "password": password, "role": role}


def organization_fields(form: FormMultiDict, errors: FormErrors) -> dict[str, Any]:
    name = text(form, "name", 400)
    plan = text(form, "plan") or Plan.PAYG.value
    check_name(name, errors, what="the organization's name")
    if plan not in {p.value for p in Plan}:
        errors.add("plan", "Choose a plan.")
    return {"name": name, "plan": plan}


def chosen_scopes(form: FormMultiDict, allowed: Iterable[str], errors: FormErrors) -> list[str]:
    allowed_set = set(allowed)
    chosen = [s for s in form.getall("scopes") if isinstance(s, str)] if "scopes" in form else []
    bad = [s for s in chosen if s not in allowed_set]
    if bad:
        errors.add("scopes", f"You cannot grant: {', '.join(sorted(set(bad)))}.")
    elif not chosen:
        errors.add("scopes", "Choose at least one scope.")
    return [s for s in ALL_SCOPES if s in chosen]


def expiry_days(form: FormMultiDict, errors: FormErrors) -> int | None:
    raw = text(form, "expires_in_days")
    if raw in ("", "never"):
        return None
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if not 1 <= days <= 3650:
        errors.add("expires_in_days", "Choose when the token expires.")
        return None
    return days


#: the largest API budget a sysadmin may give an organization (requests a minute per token), as the API
MAX_RATE_LIMIT = 1_000_000


def rate_limit_field(form: FormMultiDict, errors: FormErrors) -> int | None:
    """An organization's API budget: blank is the instance default (None), else a whole number."""
    raw = text(form, "api_rate_limit", 40).replace(",", "").replace("_", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_RATE_LIMIT:
        problem = f"Enter a whole number of requests a minute, from 1 to {MAX_RATE_LIMIT:,}, or leave it blank."
        errors.add("api_rate_limit", problem)
        return None
    return int(raw)
