"""The registry and its health check, with broken plugins installed through real entry points.

Each test writes a distribution (``*.dist-info`` with ``entry_points.txt``) and its modules into a
directory it puts on ``sys.path``; ``importlib.metadata`` discovers them exactly as it would discover
a ``pip install``-ed plugin.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.asgi import create_app
from app.config import Settings
from app.plugins.base import PluginContext
from app.servicehost.jobs import CRON_JOBS, recheck_plugins
from app.servicehost.registry import PluginRegistry, is_available, load_registry, service_statuses
from app.tenants.models import Role
from tests.conftest import World, bearer

PLUGINS_SOURCE = '''
from typing import Any, ClassVar
import asyncio
import os

import msgspec

from app.plugins.base import PluginContext, PluginInfo, SelfTestError


class BrokenCredentials(msgspec.Struct):
    token: str


class _Base:
    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def self_test(self) -> None:
        return None

    async def validate_credentials(self, credentials: Any) -> None:
        return None

    async def send(self, message: Any, address: Any, credentials: Any) -> str:
        return "sent"

    async def parse_webhook(self, request: Any, credentials: Any) -> list[Any]:
        return []


class Broken(_Base):
    info: ClassVar[PluginInfo] = PluginInfo(
        name="broken", title="Broken service", address_field="phone", credentials_type=BrokenCredentials
    )

    async def self_test(self) -> None:
        raise SelfTestError("the frobnicator library is not installed")


class Healing(_Base):
    info: ClassVar[PluginInfo] = PluginInfo(name="healing", title="Healing service", address_field=None)

    async def self_test(self) -> None:
        if not os.path.exists(MARKER):
            raise SelfTestError("upstream configuration missing")


class Hanging(_Base):
    info: ClassVar[PluginInfo] = PluginInfo(name="hanging", title="Hanging service", address_field=None)

    async def self_test(self) -> None:
        await asyncio.sleep(60)


class Exploding(_Base):
    info: ClassVar[PluginInfo] = PluginInfo(name="exploding", title="Exploding", address_field=None)

    def __init__(self, context: PluginContext) -> None:
        raise RuntimeError("boom in __init__")


class NoInfo(_Base):
    pass


class Misnamed(_Base):
    info: ClassVar[PluginInfo] = PluginInfo(name="something-else", title="Misnamed", address_field=None)


class NotAsync(Broken):
    info: ClassVar[PluginInfo] = PluginInfo(name="notasync", title="Not async", address_field=None)

    def send(self, message: Any, address: Any, credentials: Any) -> str:  # type: ignore[override]
        return "sync"
'''

NEEDS_MISSING_DEPENDENCY = "import frobnicator_sdk  # noqa: F401\n\nclass Plugin:\n    pass\n"


@dataclass
class Installed:
    root: Path
    module: str
    marker: Path
    names: list[str]

    def heal(self) -> None:
        self.marker.write_text("ok")

    def uninstall(self) -> None:
        sys.path.remove(str(self.root))
        importlib.invalidate_caches()


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> Iterator[Installed]:
    """Install a distribution declaring the plugins ``names`` (from the classes above) under ``voluble.plugins``."""
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path / "site"
    root.mkdir()
    module, missing = f"broken_plugin_mod_{suffix}", f"broken_missing_dep_{suffix}"
    marker = tmp_path / "healed"
    (root / f"{module}.py").write_text(PLUGINS_SOURCE + f"\nMARKER = {str(marker)!r}\n")
    (root / f"{missing}.py").write_text(NEEDS_MISSING_DEPENDENCY)
    targets = {
        "broken": f"{module}:Broken",
        "healing": f"{module}:Healing",
        "hanging": f"{module}:Hanging",
        "exploding": f"{module}:Exploding",
        "noinfo": f"{module}:NoInfo",
        "misnamed": f"{module}:Misnamed",
        "notasync": f"{module}:NotAsync",
        "unimportable": f"{missing}:Plugin",
        "gone": f"broken_no_such_module_{suffix}:Plugin",
    }
    dist = root / f"broken_plugin_{suffix}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: broken-plugin-{suffix}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {targets[name]}" for name in names)
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"[voluble.plugins]\n{lines}\n"))
    monkeypatch.syspath_prepend(str(root))
    try:
        yield Installed(root, module, marker, names)
    finally:
        for name in (module, missing):
            sys.modules.pop(name, None)


ALL = ["broken", "healing", "hanging", "exploding", "noinfo", "misnamed", "notasync", "unimportable", "gone"]
FAST = ["broken", "healing", "unimportable"]


@pytest.fixture
def installed_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    yield from install(tmp_path, monkeypatch, ALL)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    yield from install(tmp_path, monkeypatch, FAST)


async def test_health_check_blacklists_every_kind_of_broken_plugin(tmp_path: Path, installed_all: Installed) -> None:
    registry = PluginRegistry(PluginContext(var_dir=tmp_path), self_test_timeout=0.5)
    assert registry.get("log") is None  # nothing is handed out before a check
    await registry.check()

    entries = {e.name: e for e in registry.entries()}
    assert set(ALL) | {"log", "smtp", "webhook"} <= set(entries)
    for name in ("log", "smtp", "webhook"):
        assert entries[name].status == "available", entries[name].reason
        assert registry.get(name) is not None
    reasons = {name: entries[name].reason or "" for name in ALL}
    assert all(entries[name].status == "blacklisted" and registry.get(name) is None for name in ALL)
    assert reasons["broken"] == "Self-test failed: the frobnicator library is not installed"
    assert reasons["healing"] == "Self-test failed: upstream configuration missing"
    assert reasons["hanging"] == "Self-test timed out after 0.5 s."
    assert reasons["exploding"] == "Instantiation failed: RuntimeError: boom in __init__"
    assert "declares no `info`" in reasons["noinfo"]
    assert "declares the name 'something-else' but is registered as 'misnamed'" in reasons["misnamed"]
    assert "async def send()" in reasons["notasync"]
    assert reasons["unimportable"] == "Import failed: ModuleNotFoundError: No module named 'frobnicator_sdk'"
    assert reasons["gone"].startswith("Import failed: ModuleNotFoundError")
    # what a blacklisted plugin declared is still known (for the services page), when it loaded
    assert entries["broken"].title == "Broken service" and entries["broken"].needs_credentials
    assert entries["unimportable"].title == "unimportable" and entries["unimportable"].info is None
    assert "broken" in registry.infos() and "unimportable" not in registry.infos()


async def test_recheck_restores_a_plugin_that_starts_passing(tmp_path: Path, installed: Installed) -> None:
    registry = PluginRegistry(PluginContext(var_dir=tmp_path))
    await registry.check()
    assert registry.get("healing") is None
    installed.heal()
    await registry.ensure_fresh(max_age=3600)  # fresh enough: no re-check
    assert registry.get("healing") is None
    await registry.ensure_fresh(max_age=0)
    healing = registry.get("healing")
    assert healing is not None and registry.entry("healing").reason is None  # type: ignore[union-attr]
    assert registry.entry("broken").status == "blacklisted"  # type: ignore[union-attr]


async def test_recheck_job_records_statuses_for_every_process(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], installed: Installed
) -> None:
    assert [job.function for job in CRON_JOBS] == [recheck_plugins]
    ctx: dict[str, Any] = {"settings": settings, "sessions": sessions}
    result = await recheck_plugins(ctx)
    assert result["log"] == "available" and result["broken"] == "blacklisted" and result["healing"] == "blacklisted"
    async with sessions() as session:
        statuses = await service_statuses(session)
        assert statuses["broken"].reason == "Self-test failed: the frobnicator library is not installed"
        assert statuses["broken"].title == "Broken service" and statuses["broken"].address_field == "phone"
        assert statuses["unimportable"].status == "blacklisted"
        assert statuses["smtp"].needs_credentials and not statuses["log"].needs_credentials
        assert await is_available(session, "log")
        assert not await is_available(session, "broken")
        assert not await is_available(session, "healing")
        assert not await is_available(session, "no-such-service")
        first_check = statuses["healing"].checked_at

    installed.heal()
    assert (await recheck_plugins(ctx))["healing"] == "available"
    async with sessions() as session:
        statuses = await service_statuses(session)
        assert statuses["healing"].status == "available" and statuses["healing"].reason is None
        assert statuses["healing"].checked_at > first_check
        assert await is_available(session, "healing")

    installed.uninstall()
    await recheck_plugins(ctx)
    async with sessions() as session:
        statuses = await service_statuses(session)
        assert {"broken", "healing", "unimportable"}.isdisjoint(statuses)
        assert {"log", "smtp", "webhook"} <= set(statuses)
    assert load_registry(settings).entry("broken") is None


@pytest.fixture
async def app(installed: Installed, settings: Settings, engine: Any, redis: Redis) -> Litestar:
    """The application, started with the broken plugins installed (its start-up runs the health check)."""
    return create_app(settings)


async def test_api_shows_blacklisted_plugins_with_their_reason(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    org = await world.org()
    user = await world.token(await world.user(org, Role.USER))
    admin = await world.token(await world.user(org, Role.ORG_ADMIN))

    response = await client.get("/api/v1/services", headers=bearer(user))
    assert response.status_code == 200, response.text
    services = {s["name"]: s for s in response.json()["items"]}
    assert services["broken"]["status"] == "blacklisted"
    assert services["broken"]["reason"] == "Self-test failed: the frobnicator library is not installed"
    assert services["unimportable"]["status"] == "blacklisted"
    assert "No module named 'frobnicator_sdk'" in services["unimportable"]["reason"]
    assert services["healing"]["status"] == "blacklisted"
    assert services["log"]["status"] == "available" and services["log"]["reason"] is None

    detail = await client.get("/api/v1/services/broken", headers=bearer(user))
    assert detail.status_code == 200
    assert detail.json()["status"] == "blacklisted"
    assert detail.json()["credentials_schema"]["required"] == ["token"]

    # credentials cannot be checked by a blacklisted plugin: refused, nothing stored
    put = await client.put("/api/v1/services/broken/credentials", json={"token": "x"}, headers=bearer(admin))
    assert put.status_code == 409, put.text
    assert "blacklisted" in put.json()["detail"]
    put = await client.put("/api/v1/services/unimportable/credentials", json={"token": "x"}, headers=bearer(admin))
    assert put.status_code == 409, put.text


async def test_get_refreshes_a_stale_check_in_the_background(tmp_path: Path, installed: Installed) -> None:
    registry = PluginRegistry(PluginContext(var_dir=tmp_path), refresh_after=0.0)
    await registry.check()
    installed.heal()
    assert registry.get("healing") is None  # answers at once, from the last check...
    task = registry._refresh_task
    assert task is not None
    await task  # ...while a new check runs
    assert registry.get("healing") is not None


async def test_every_built_in_service_passes_the_start_up_check(tmp_path: Path) -> None:
    registry = PluginRegistry(PluginContext(var_dir=tmp_path))
    await registry.check()
    for name in ("log", "smtp", "webhook", "twilio", "telegram", "apprise"):
        entry = registry.entry(name)
        assert entry is not None and entry.available, (name, entry and entry.reason)
        assert entry.info is not None and entry.info.name == name
    telegram = registry.info("telegram")
    assert telegram is not None and telegram.accepted_state == "MSG_DELIVERED_SERVICE"
