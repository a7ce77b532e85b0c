"""What every template may use without being handed it: the labels of roles and message states.

Registered on the Jinja environment by :func:`register_globals` (``TemplateConfig.engine_callback`` in
``app/core.py``).
"""

from __future__ import annotations

from typing import Any

from app.messaging.labels import IN_FLIGHT, STATE_LABELS

#: what each role is called (forms, messages); a badge says it shorter
ROLE_LABELS: dict[str, str] = {"sysadmin": "Sysadmin", "org_admin": "Organization admin", "user": "User"}
ROLE_BADGES: dict[str, str] = {**ROLE_LABELS, "org_admin": "Org admin"}

#: what each state of a blast is called on the pages
BLAST_STATE_LABELS: dict[str, str] = {
    "scheduled": "Scheduled",
    "fanning_out": "Preparing",
    "sending": "Sending",
    "completed": "Completed",
    "cancelled": "Cancelled",
}

GLOBALS: dict[str, Any] = {
    "role_badges": ROLE_BADGES,
    "state_labels": STATE_LABELS,
    "in_flight_states": IN_FLIGHT,
    "blast_state_labels": BLAST_STATE_LABELS,
}


def register_globals(engine: Any) -> None:
    """``engine`` is Litestar's ``JinjaTemplateEngine``."""
    engine.engine.globals.update(GLOBALS)
