"""Bearer tokens resolved once a second per process, not on every request (decision 0035).

:class:`TokenCache` keeps what a bearer token resolved to (the :class:`Principal`, the token's id and
expiry) for at most ``VOLUBLE_TOKEN_CACHE_SECONDS`` (default 1 s; 0 turns it off), keyed by the token's
hash. So a token revoked, an API client revoked, a user deactivated or an organization suspended by
another process stops working within that delay. In this process it stops at once: any committed change
to those rows (through the ORM, or a bulk UPDATE/DELETE of their tables) empties the cache
(:func:`_mark_flush`, :func:`_mark_bulk`, :func:`_after_commit`). The token's own expiry is checked on
every hit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from app.clock import aware, utcnow
from app.tenants.models import AccessToken, ApiClient, Organization, User
from app.tenants.principal import Principal

#: entries kept at most (least recently used dropped first)
MAX_ENTRIES = 10_000
#: the changes that matter to what a token resolves to
WATCHED = (AccessToken, ApiClient, Organization, User)
WATCHED_TABLES = frozenset(model.__tablename__ for model in WATCHED)
#: columns whose change does not alter a resolution (the use stamp; the organization's credit counters)
IGNORED = frozenset({"last_used_at", "credits", "credits_reserved", "default_servicechain_id", "updated_at"})
_CHANGED = "auth_rows_changed"


@dataclass(frozen=True)
class Resolved:
    principal: Principal
    token_id: UUID
    expires_at: datetime | None
    cached_at: float


class TokenCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, Resolved] = OrderedDict()
        self._lock = threading.Lock()  # the test client runs the app in another thread
        self.max_entries = max_entries
        self._lookups: dict[tuple[int, str], asyncio.Lock] = {}

    def get(self, token_hash: str, ttl: float) -> Resolved | None:
        """The resolution cached less than ``ttl`` seconds ago, if the token has not expired since."""
        with self._lock:
            hit = self._entries.get(token_hash)
            if hit is None:
                return None
            if time.monotonic() - hit.cached_at >= ttl or (
                hit.expires_at is not None and aware(hit.expires_at) <= utcnow()
            ):
                del self._entries[token_hash]
                return None
            self._entries.move_to_end(token_hash)
            return hit

    def put(self, token_hash: str, principal: Principal, token_id: UUID, expires_at: datetime | None) -> None:
        with self._lock:
            self._entries[token_hash] = Resolved(principal, token_id, expires_at, time.monotonic())
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    @asynccontextmanager
    async def lookup_lock(self, token_hash: str) -> AsyncIterator[None]:
        """Held while one request looks ``token_hash`` up (per event loop: the test client runs apps in
        threads of their own)."""
        key = (id(asyncio.get_running_loop()), token_hash)
        lock = self._lookups.get(key)
        if lock is None:
            lock = self._lookups[key] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._lookups.get(key) is lock:
                del self._lookups[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: the process's cache (every app of the process: token hashes never collide)
TOKEN_CACHE = TokenCache()


def _changes_resolution(obj: Any) -> bool:
    state = inspect(obj)
    if state.deleted or state.was_deleted:
        return True
    return any(attr.key not in IGNORED and attr.history.has_changes() for attr in state.attrs)


@event.listens_for(Session, "after_flush")
def _mark_flush(session: Session, _: UOWTransaction) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, WATCHED) and _changes_resolution(obj):
            session.info[_CHANGED] = True
            return


@event.listens_for(Session, "do_orm_execute")
def _mark_bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name not in WATCHED_TABLES:
        return
    values = getattr(state.statement, "_values", None) or {}
    columns = {getattr(c, "key", str(c)) for c in values}
    if state.is_delete or not columns or columns - IGNORED:
        state.session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        TOKEN_CACHE.clear()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)
