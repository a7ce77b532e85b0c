"""The plugin registry and its health check.

Plugins are discovered from the entry-point group ``voluble.plugins`` (the built-ins are registered
the same way, in ``pyproject.toml``). :meth:`PluginRegistry.check` loads, instantiates and
self-tests every one of them; a plugin that fails any step is **blacklisted** with a readable reason
and :meth:`PluginRegistry.get` will not hand it out until a later check passes.

Each process keeps its own registry (the plugin instances live in memory), while the outcome of the
checks is recorded instance-wide in the ``service_status`` table (:func:`record_statuses`), so that
the API, the pages and the coordinator of every process read one truth (:func:`service_statuses`,
:func:`is_available`).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import Any, Literal, get_args
from uuid import uuid4

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.config import Settings
from app.logging import get_logger
from app.plugins.base import AddressField, Plugin, PluginContext, PluginError, PluginInfo
from app.servicehost.models import ServiceStatus

log = get_logger(__name__)

GROUP = "voluble.plugins"
#: seconds one plugin's ``self_test()`` may take before it is blacklisted
SELF_TEST_TIMEOUT = 10.0
#: a local check older than this is redone by :meth:`PluginRegistry.ensure_fresh`
DEFAULT_MAX_AGE = 300.0
MAX_REASON = 500

Status = Literal["available", "blacklisted"]
AVAILABLE: Status = "available"
BLACKLISTED: Status = "blacklisted"

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_METHODS = ("self_test", "validate_credentials", "send", "parse_webhook")
_ADDRESS_FIELDS = get_args(AddressField)


@dataclass(frozen=True)
class PluginEntry:
    """What the last check found out about one entry point."""

    name: str
    #: ``module:attribute`` the entry point names
    target: str
    distribution: str | None
    status: Status
    reason: str | None
    checked_at: datetime
    #: the constructed plugin (also kept when only its self-test failed, so a re-check reuses it)
    plugin: Plugin | None = None
    #: the plugin's declared metadata, when its class loaded and declares a valid one
    info: PluginInfo | None = None

    @property
    def available(self) -> bool:
        return self.status == AVAILABLE

    @property
    def title(self) -> str:
        return self.info.title if self.info else self.name

    @property
    def address_field(self) -> str | None:
        return self.info.address_field if self.info else None

    @property
    def needs_credentials(self) -> bool:
        return bool(self.info and self.info.credentials_type is not None)


class _Blacklist(Exception):
    """Internal: a step of the check failed; ``str(exc)`` is the reason."""


def _describe(exc: BaseException) -> str:
    """A reason readable by an operator: the plugin's own message, or the exception type and message."""
    text = str(exc).strip()
    if isinstance(exc, PluginError) and text:
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _clip(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def discover() -> list[metadata.EntryPoint]:
    """The entry points of the ``voluble.plugins`` group, one per name (the first one found wins)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in found:
            if found[ep.name].value != ep.value:
                log.warning(
                    "duplicate plugin name ignored", plugin=ep.name, kept=found[ep.name].value, ignored=ep.value
                )
            continue
        found[ep.name] = ep
    return [found[name] for name in sorted(found)]


def _validate_info(name: str, cls: Any) -> PluginInfo:
    info = getattr(cls, "info", None)
    if not isinstance(info, PluginInfo):
        raise _Blacklist("The plugin declares no `info` (a PluginInfo).")
    if info.name != name:
        raise _Blacklist(f"The plugin declares the name {info.name!r} but is registered as {name!r}.")
    if info.address_field is not None and info.address_field not in _ADDRESS_FIELDS:
        raise _Blacklist(f"Unknown address field {info.address_field!r}.")
    ctype = info.credentials_type
    if ctype is not None and not (isinstance(ctype, type) and issubclass(ctype, msgspec.Struct)):
        raise _Blacklist("`credentials_type` must be a msgspec.Struct subclass or None.")
    if ctype is not None:
        try:
            msgspec.json.schema(ctype)
        except Exception as exc:
            raise _Blacklist(f"`credentials_type` has no JSON schema: {_describe(exc)}") from exc
    for method in _METHODS:
        if not inspect.iscoroutinefunction(getattr(cls, method, None)):
            raise _Blacklist(f"The plugin does not implement `async def {method}()`.")
    return info


class PluginRegistry:
    """The installed plugins of this process, with the result of their last health check."""

    def __init__(
        self,
        context: PluginContext,
        self_test_timeout: float = SELF_TEST_TIMEOUT,
        refresh_after: float | None = DEFAULT_MAX_AGE,
    ) -> None:
        self.context = context
        self.self_test_timeout = self_test_timeout
        #: :meth:`get` starts a background re-check when the last one is older (None: never)
        self.refresh_after = refresh_after
        self._refresh_task: asyncio.Task[None] | None = None
        self._entries: dict[str, PluginEntry] = {}
        self._checked_monotonic: float | None = None
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def checked(self) -> bool:
        """Whether a check has run in this process."""
        return self._checked_monotonic is not None

    def get(self, name: str) -> Plugin | None:
        """The plugin ``name`` if it is installed and passed its last check; None otherwise.

        When the last check is older than ``refresh_after`` seconds, a new one starts in the
        background (this call does not wait for it), so that every process that hands out plugins
        notices a plugin that was restored or broke, not only the one that runs the periodic job.
        """
        self._refresh_if_stale()
        entry = self._entries.get(name)
        return entry.plugin if entry is not None and entry.available else None

    def _refresh_if_stale(self) -> None:
        if self.refresh_after is None or self._checked_monotonic is None:
            return
        if time.monotonic() - self._checked_monotonic <= self.refresh_after:
            return
        if self._refresh_task is not None and not self._refresh_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refresh_task = loop.create_task(self.check(), name="plugin-health-refresh")

    def entry(self, name: str) -> PluginEntry | None:
        """What the last check found for ``name`` (available or blacklisted); None if not installed."""
        return self._entries.get(name)

    def entries(self) -> list[PluginEntry]:
        """Every installed plugin, available or blacklisted, by name."""
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        """The names of every installed plugin, available or blacklisted."""
        return sorted(self._entries)

    def infos(self) -> dict[str, PluginInfo]:
        """The metadata of every installed plugin whose class loaded (including blacklisted ones)."""
        return {name: e.info for name, e in sorted(self._entries.items()) if e.info is not None}

    def info(self, name: str) -> PluginInfo | None:
        entry = self._entries.get(name)
        return entry.info if entry is not None else None

    # -- checking ------------------------------------------------------------------------------

    def _get_lock(self) -> asyncio.Lock:
        # A registry may outlive an event loop (tests, CLI): a lock belongs to the loop it was used on.
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def check(self) -> None:
        """Discover, load, instantiate and self-test every plugin. Never raises."""
        async with self._get_lock():
            try:
                eps = discover()
            except Exception:  # a broken distribution's metadata must not stop the check
                log.exception("plugin discovery failed")
                eps = []
            previous = self._entries
            results = await asyncio.gather(*(self._check_one(ep, previous.get(ep.name)) for ep in eps))
            self._entries = {entry.name: entry for entry in results}
            self._checked_monotonic = time.monotonic()
        for entry in results:
            before = previous.get(entry.name)
            if not entry.available:
                log.warning("plugin blacklisted", plugin=entry.name, target=entry.target, reason=entry.reason)
            elif before is not None and not before.available:
                log.info("plugin restored", plugin=entry.name)

    async def ensure_checked(self) -> None:
        """Run a check unless one has already run in this process."""
        if not self.checked:
            await self.check()

    async def ensure_fresh(self, max_age: float = DEFAULT_MAX_AGE) -> None:
        """Re-check when the last local check is older than ``max_age`` seconds (cheap otherwise)."""
        if self._checked_monotonic is None or time.monotonic() - self._checked_monotonic > max_age:
            await self.check()

    async def _check_one(self, ep: metadata.EntryPoint, previous: PluginEntry | None) -> PluginEntry:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        plugin: Plugin | None = None
        info: PluginInfo | None = None
        try:
            if not _NAME.match(ep.name):
                raise _Blacklist(
                    "Invalid plugin name: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter."
                )
            if previous is not None and previous.plugin is not None and previous.target == ep.value:
                plugin, info = previous.plugin, previous.info
            else:
                try:
                    cls = ep.load()
                except Exception as exc:
                    raise _Blacklist(f"Import failed: {_describe(exc)}") from exc
                if not isinstance(cls, type):
                    raise _Blacklist(f"{ep.value} is not a class.")
                info = _validate_info(ep.name, cls)
                try:
                    plugin = cls(self.context)
                except Exception as exc:
                    raise _Blacklist(f"Instantiation failed: {_describe(exc)}") from exc
            assert plugin is not None
            try:
                await asyncio.wait_for(plugin.self_test(), timeout=self.self_test_timeout)
            except TimeoutError as exc:
                raise _Blacklist(f"Self-test timed out after {self.self_test_timeout:g} s.") from exc
            except Exception as exc:
                raise _Blacklist(f"Self-test failed: {_describe(exc)}") from exc
        except _Blacklist as exc:
            return PluginEntry(
                name=ep.name,
                target=ep.value,
                distribution=dist,
                status=BLACKLISTED,
                reason=_clip(str(exc)),
                checked_at=utcnow(),
                plugin=plugin,
                info=info,
            )
        except Exception as exc:  # pragma: no cover - defensive: the check itself must never raise
            return PluginEntry(
                name=ep.name,
                target=ep.value,
                distribution=dist,
                status=BLACKLISTED,
                reason=_clip(f"Check failed: {_describe(exc)}"),
                checked_at=utcnow(),
                plugin=plugin,
                info=info,
            )
        return PluginEntry(
            name=ep.name,
            target=ep.value,
            distribution=dist,
            status=AVAILABLE,
            reason=None,
            checked_at=utcnow(),
            plugin=plugin,
            info=info,
        )


# -- one registry per process ----------------------------------------------------------------

_REGISTRIES: OrderedDict[PluginContext, PluginRegistry] = OrderedDict()
_MAX_REGISTRIES = 16


def plugin_context(settings: Settings) -> PluginContext:
    return PluginContext(
        var_dir=settings.var_dir,
        allow_private_targets=settings.security.allow_private_targets,
        public_url=settings.server.public_url,
        send_timeout=settings.worker.send_timeout,
    )


def load_registry(settings: Settings) -> PluginRegistry:
    """This process's registry for these settings (created once, cached). It is not checked yet:
    ``await registry.ensure_checked()`` (or ``check()``) before relying on :meth:`PluginRegistry.get`."""
    context = plugin_context(settings)
    registry = _REGISTRIES.get(context)
    if registry is None:
        registry = _REGISTRIES[context] = PluginRegistry(context)
        while len(_REGISTRIES) > _MAX_REGISTRIES:
            _REGISTRIES.popitem(last=False)
    else:
        _REGISTRIES.move_to_end(context)
    return registry


# -- the instance-wide record ------------------------------------------------------------------


def _row_values(entry: PluginEntry) -> dict[str, Any]:
    return {
        "title": entry.title[:200],
        "address_field": entry.address_field,
        "needs_credentials": entry.needs_credentials,
        "status": entry.status,
        "reason": entry.reason,
        "checked_at": entry.checked_at,
    }


async def record_statuses(session: AsyncSession, registry: PluginRegistry) -> None:
    """Upsert the registry's last check into ``service_status`` and drop plugins no longer installed.

    Flushes but does not commit: the caller owns the transaction.
    """
    entries = registry.entries()
    dialect = session.get_bind().dialect.name
    now = utcnow()
    for entry in entries:
        values = _row_values(entry)
        row_values = {"id": uuid4(), "name": entry.name, "created_at": now, "updated_at": now, **values}
        if dialect == "postgresql":
            pg_stmt = postgresql.insert(ServiceStatus).values(**row_values)
            await session.execute(
                pg_stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now})
            )
        elif dialect == "sqlite":
            lite_stmt = sqlite.insert(ServiceStatus).values(**row_values)
            await session.execute(
                lite_stmt.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": now})
            )
        else:  # pragma: no cover - other databases: read, then write
            row = await session.scalar(select(ServiceStatus).where(ServiceStatus.name == entry.name))
            if row is None:
                session.add(ServiceStatus(name=entry.name, **values))
            else:
                for key, value in values.items():
                    setattr(row, key, value)
    installed = [entry.name for entry in entries]
    if not installed:  # discovery failed (the built-ins are always installed): keep what was recorded
        await session.flush()
        return
    await session.execute(
        delete(ServiceStatus).where(ServiceStatus.name.not_in(installed)).execution_options(synchronize_session=False)
    )
    await session.flush()
    session.expire_all()


async def service_statuses(session: AsyncSession) -> dict[str, ServiceStatus]:
    """Every recorded service by name (as the last check of any process recorded it)."""
    rows = await session.scalars(select(ServiceStatus).order_by(ServiceStatus.name))
    return {row.name: row for row in rows}


async def is_available(session: AsyncSession, name: str) -> bool:
    """Whether the service ``name`` is installed and passed its last recorded check."""
    status = await session.scalar(select(ServiceStatus.status).where(ServiceStatus.name == name))
    return status == AVAILABLE


async def check_and_record(registry: PluginRegistry, session_maker: Callable[[], AsyncSession]) -> list[PluginEntry]:
    """Run the health check and record it (the start-up hook and the periodic re-check)."""
    await registry.check()
    async with session_maker() as session:
        await record_statuses(session, registry)
        await session.commit()
    return registry.entries()


async def startup_check(settings: Settings, session_maker: Callable[[], AsyncSession]) -> PluginRegistry:
    """The application's start-up health check: never stops the start-up, logs what fails."""
    registry = load_registry(settings)
    try:
        entries = await check_and_record(registry, session_maker)
    except Exception:
        log.exception("recording the plugin health check failed")
        entries = registry.entries()
    _log_summary(entries)
    return registry


def _log_summary(entries: Iterable[PluginEntry]) -> None:
    entries = list(entries)
    log.info(
        "plugin health check",
        available=[e.name for e in entries if e.available],
        blacklisted=[e.name for e in entries if not e.available],
    )
