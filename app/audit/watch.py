"""Every create, update and delete of the audited tables is recorded by one flush listener, in the
same flush (hence transaction) as the change: no service has to remember to call :func:`record`.

A table is named here by its table name (``app.audit`` sits below the domains and imports none of
them). Only field NAMES are written; a column holding a secret is named by what it stands for
(``password_hash`` -> ``password``) or not at all. Changes made by bulk statements
(``UPDATE … SET credits = credits + n``) do not pass through the unit of work: their code calls
:func:`app.audit.services.record` itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry
from app.audit.services import entry

#: columns no entry mentions (bookkeeping, not a change anybody made)
_ALWAYS_IGNORED = frozenset({"id", "created_at", "updated_at", "organization_id"})

Verb = Callable[[Any, set[str]], str | None]


@dataclass(frozen=True)
class Watched:
    target_type: str
    #: column -> the name an entry shows for it (secrets: what they stand for)
    rename: dict[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    #: only changes touching one of these are recorded (empty: any)
    only: frozenset[str] = frozenset()
    record_create: bool = True
    #: the action of an update, from the object and its changed columns (None: the default ``.updated``)
    update_verb: Verb | None = None
    #: the action of a create (None: ``.created``; a verb answering "" records nothing)
    create_verb: Verb | None = None


def _organization(obj: Any, changed: set[str]) -> str | None:
    if "suspended" in changed:
        return "suspended" if obj.suspended else "reactivated"
    if changed == {"default_servicechain_id"}:
        return "default_chain_changed"
    if changed == {"api_rate_limit"}:
        return "rate_limit_changed"
    return None


def _user(obj: Any, changed: set[str]) -> str | None:
    if "is_active" in changed:
        return "activated" if obj.is_active else "deactivated"
    if "role" in changed:
        return "role_changed"
    if changed == {"password_hash"}:
        return "password_changed"
    return None


def _revocable(obj: Any, changed: set[str]) -> str | None:
    return "revoked" if "revoked_at" in changed and obj.revoked_at is not None else None


def _contact(obj: Any, changed: set[str]) -> str | None:
    return "opted_out" if obj.opted_out else "opted_in"


def _token_create(obj: Any, changed: set[str]) -> str | None:
    # a client's OAuth token is its login, recorded by the token endpoint (auth.client_login)
    return "created" if str(obj.kind) == "personal" else ""


def _saved(obj: Any, changed: set[str]) -> str | None:
    return "saved"


def _webhook(obj: Any, changed: set[str]) -> str | None:
    if "secret_encrypted" in changed:
        return "secret_rotated"
    if "enabled" in changed:
        return "enabled" if obj.enabled else "disabled"
    return None


WATCHED: dict[str, Watched] = {
    "organization": Watched(
        "organization",
        ignore=frozenset({"credits_reserved", "credits"}),  # credits move by bulk statements (credits.add)
        update_verb=_organization,
    ),
    "user_account": Watched(
        "user",
        rename={"password_hash": "password"},
        ignore=frozenset({"last_login_at"}),
        update_verb=_user,
    ),
    "api_client": Watched(
        "api_client", rename={"secret_hash": "secret"}, ignore=frozenset({"client_id"}), update_verb=_revocable
    ),
    "access_token": Watched(
        "token",
        ignore=frozenset({"token_hash", "prefix", "last_used_at"}),
        update_verb=_revocable,
        create_verb=_token_create,
    ),
    "service_credential": Watched(
        "service_credential",
        rename={"ciphertext": "credentials"},
        ignore=frozenset({"key_id"}),
        update_verb=_saved,
        create_verb=_saved,
    ),
    "servicechain": Watched("servicechain"),
    # created here; the fan-out moves its state with Core statements (not an actor's change); a cancel
    # is recorded by BlastService.cancel
    "blast": Watched("blast", only=frozenset({"name"})),
    "webhook_endpoint": Watched(
        "webhook",
        rename={"secret_encrypted": "secret", "previous_secret_encrypted": "previous_secret"},
        # the dispatcher's bookkeeping is no one's change
        ignore=frozenset({"last_success_at", "failing_since", "previous_secret_expires_at"}),
        update_verb=_webhook,
    ),
    "contact": Watched("contact", only=frozenset({"opted_out"}), update_verb=_contact, record_create=False),
}


def _names(spec: Watched, columns: set[str]) -> list[str]:
    return sorted({spec.rename.get(c, c) for c in columns if c not in _ALWAYS_IGNORED and c not in spec.ignore})


def _changed(obj: Any) -> set[str]:
    state = inspect(obj)
    return {attr.key for attr in state.mapper.column_attrs if state.attrs[attr.key].history.has_changes()}


def _org_of(obj: Any, table: str) -> Any:
    return obj.id if table == "organization" else getattr(obj, "organization_id", None)


def _summary(spec: Watched, obj: Any, names: list[str]) -> str:
    label = getattr(obj, "service", None) if spec.target_type == "service_credential" else None
    if spec.target_type == "contact" and getattr(obj, "opted_out_via", None):
        return f"{', '.join(names)} (via {obj.opted_out_via})"
    fields = ", ".join(names)
    return f"{label}: {fields}" if label and fields else (label or fields)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    entries: list[AuditEntry] = []
    for obj in list(session.new):
        spec = WATCHED.get(getattr(obj, "__tablename__", ""))
        if spec is None or not spec.record_create:
            continue
        columns = {a.key for a in inspect(obj).mapper.column_attrs if getattr(obj, a.key, None) is not None}
        verb = spec.create_verb(obj, columns) if spec.create_verb else "created"
        if not verb:
            continue
        if obj.id is None:  # the id is known before the INSERT so the entry can name it
            obj.id = uuid.uuid4()
        summary = _summary(spec, obj, _names(spec, columns))
        entries.append(
            entry(
                session,
                f"{spec.target_type}.{verb}",
                spec.target_type,
                obj.id,
                summary,
                organization_id=_org_of(obj, obj.__tablename__),
            )
        )
    for obj in list(session.dirty):
        spec = WATCHED.get(getattr(obj, "__tablename__", ""))
        if spec is None or not session.is_modified(obj, include_collections=False):
            continue
        changed = _changed(obj)
        if spec.only and not changed & spec.only:
            continue
        names = _names(spec, changed)
        if not names:
            continue
        verb = (spec.update_verb(obj, changed) if spec.update_verb else None) or "updated"
        entries.append(
            entry(
                session,
                f"{spec.target_type}.{verb}",
                spec.target_type,
                obj.id,
                _summary(spec, obj, names),
                organization_id=_org_of(obj, obj.__tablename__),
            )
        )
    for obj in list(session.deleted):
        spec = WATCHED.get(getattr(obj, "__tablename__", ""))
        if spec is None or spec.only:
            continue
        entries.append(
            entry(
                session,
                f"{spec.target_type}.deleted",
                spec.target_type,
                obj.id,
                _summary(spec, obj, []),
                organization_id=_org_of(obj, obj.__tablename__),
            )
        )
    session.add_all(entries)
