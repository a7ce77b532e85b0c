"""Voluble's own commands: ``up``, ``workers run``, ``users create-sysadmin``, ``tokens create``, and
``database upgrade`` (in place of advanced-alchemy's, which asks for confirmation)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from app.cli_credentials import credentials_group
from app.cli_serve import exit_cleanly as _exit_cleanly
from app.cli_serve import run_command
from app.config import Settings, get_settings


def _sessions(settings: Settings) -> Any:
    import app.audit  # noqa: F401  (the audit listener: what the CLI changes is recorded, by the system)
    from app.db.config import make_sessions  # imported when used: the CLI starts fast

    return make_sessions(settings)


def upgrade_database(settings: Settings, revision: str = "head", sql: bool = False) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands

    from app.db.config import make_sqlalchemy_config

    AlembicCommands(sqlalchemy_config=make_sqlalchemy_config(settings)).upgrade(revision=revision, sql=sql)


async def _create_sysadmin(settings: Settings, email: str, password: str, name: str) -> None:
    from app.tenants.users import AccountService

    engine, sessions = _sessions(settings)
    try:
        async with sessions() as session:
            await AccountService(session=session).create_or_reset_sysadmin(email, password, name)
    finally:
        await engine.dispose()


async def _create_demo_organization(settings: Settings, admin_email: str, password: str) -> None:
    """The embedded run's demo: an organization, its admin, and its default chain on the ``log`` service."""
    from app.messaging.services import ServicechainService
    from app.servicehost.registry import check_and_record, load_registry
    from app.tenants.deps import scoped
    from app.tenants.models import Organization, Role
    from app.tenants.users import UserService

    engine, sessions = _sessions(settings)
    try:
        await check_and_record(load_registry(settings), sessions)
        async with sessions() as session:
            org = Organization(name="Demo organization")
            session.add(org)
            await session.flush()
            await scoped(UserService, session, org.id).create(
                {"email": admin_email, "name": "Demo Admin", "password": password, "role": Role.ORG_ADMIN}
            )
            chain = await scoped(ServicechainService, session, org.id).create_chain(
                {"name": "Default (log)", "services": ["log"], "description": "Writes to var/outbox.jsonl"}
            )
            org.default_servicechain_id = chain.id  # a first message needs no chain named
            await session.commit()
    finally:
        await engine.dispose()


async def _create_token(settings: Settings, email: str, scopes: list[str] | None, name: str, days: int | None) -> str:
    from app.tenants.services import TokenService
    from app.tenants.users import AccountService

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
    from app.errors import ValidationProblem

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
    from app.errors import Forbidden, ValidationProblem

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
    # until the workers' own handlers are in place (the imports take a while): nothing is in flight yet
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    from app.logging import configure_logging
    from app.worker.runner import run_workers as run

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run(settings))


@click.group(name="metrics", help="Prometheus metrics.")
def metrics_group() -> None:
    pass


@metrics_group.command(
    name="serve",
    help="Serve this host's process metrics at /metrics (a host with workers and no web process; docs/decisions/0033).",
)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=9464, show_default=True, type=int)
def serve_metrics(host: str, port: int) -> None:
    from app.logging import configure_logging
    from app.metrics import MULTIPROC_ENV, multiprocess_dir, serve_host

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    directory = multiprocess_dir()
    if directory is None or not directory.is_dir():
        raise click.ClickException(f"{MULTIPROC_ENV} must name the directory this host's processes count into")
    if not settings.metrics.token:
        raise click.ClickException("set VOLUBLE_METRICS_TOKEN: the exporter answers only with that bearer token")
    serve_host(host, port, settings.metrics.token)


DEMO_EMAIL = "admin@voluble.local"
DEMO_ORG_EMAIL = "demo@voluble.local"


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C does."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


@dataclass
class _Part:
    """A process ``voluble up`` started, and how long it may take to stop."""

    name: str
    process: subprocess.Popen[bytes]
    grace: float
    #: the processes' shared metrics directory (app/metrics.py): a stopped part's live gauges leave it
    metrics_dir: Path

    def terminate(self) -> None:
        # SIGTERM, not SIGINT: stops uvicorn and the workers as gracefully, and without a traceback
        # from a process that has not installed its handlers yet
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> None:
        try:
            self.process.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            click.echo(f"{self.name} did not stop within {self.grace:.0f}s: killed", err=True)
            self.process.kill()
            self.process.wait()
        from app.metrics import process_exited

        process_exited(self.process.pid, self.metrics_dir)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own session: the terminal's Ctrl-C reaches only `voluble up`, which stops the parts in order.
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def _demo_login(settings: Settings) -> str:
    """The demo accounts (created on the first run, kept in ``var/demo-login.txt``), as the banner shows them."""
    import secrets as _secrets

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
    note = f"  login:    {lines[0]}\n  password: {lines[1]}   (sysadmin; kept in {demo_file})"
    if len(lines) >= 4:
        note += f"\n  demo org admin: {lines[2]} / {lines[3]}"
    return note


@click.command(name="up", help="Run everything on one machine: migrate, Redis, web, workers.")
@click.option("--workers", "n_workers", default=1, show_default=True, help="Worker processes to start.")
def up(n_workers: int) -> None:
    """Ctrl-C (or SIGTERM, SIGHUP) stops the web server, then the workers, then the embedded Redis; exit 0."""
    from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError, start_embedded_redis
    from app.logging import configure_logging
    from app.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    # Ctrl-C works even when started with SIGINT ignored (a script's background job inherits SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
            signal.signal(signum, _raise_stop)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    redis: EmbeddedRedis | None = None
    web: list[_Part] = []
    workers: list[_Part] = []
    failed: str | None = None
    env = dict(os.environ)
    # every part counts into one directory, emptied now (app/metrics.py, docs/decisions/0033)
    metrics_dir = prepare_multiprocess_dir(Path(env.get(MULTIPROC_ENV) or settings.var_dir / "metrics"))
    env[MULTIPROC_ENV] = str(metrics_dir)
    try:
        if settings.redis.embedded:
            try:
                redis = start_embedded_redis(settings.var_dir / "redis")
            except EmbeddedRedisError as exc:
                raise click.ClickException(str(exc)) from exc
            env["VOLUBLE_REDIS_URL"] = redis.url
            click.echo(f"embedded Redis on {redis.url}", err=True)
        upgrade_database(settings)
        login_note = _demo_login(settings)
        exe = [sys.executable, "-m", "app"]
        grace = settings.worker.shutdown_grace + 10  # the jobs in flight get their grace period, then SAQ cleans up
        workers = [
            _Part("worker", _spawn([*exe, "workers", "run"], env), grace, metrics_dir) for _ in range(max(n_workers, 0))
        ]
        server = settings.server
        web_args = [*exe, "run", "--host", server.host, "--port", str(server.port)]
        web = [_Part("web server", _spawn(web_args, env), server.shutdown_grace + 10, metrics_dir)]
        click.echo(
            f"\nVoluble is up at http://{server.host}:{server.port}/\n{login_note}\nPress Ctrl-C to stop.\n",
            err=True,
        )
        while failed is None:
            time.sleep(0.3)
            gone = next((p for p in (*web, *workers) if p.process.poll() is not None), None)
            if gone is not None:
                failed = f"the {gone.name} exited by itself (code {gone.process.returncode})"
    except KeyboardInterrupt:
        click.echo("", err=True)  # after the terminal's ^C
    except _Stop:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        for name, parts in (("web server", web), ("workers", workers)):
            if parts:
                click.echo(f"stopping the {name}", err=True)
                for part in parts:
                    part.terminate()
                for part in parts:
                    part.wait()
        if redis is not None:
            click.echo("stopping the embedded Redis", err=True)
            redis.stop()
        if web or workers or redis:
            click.echo("stopped", err=True)
    if failed:
        raise click.ClickException(failed)


@click.command(
    name="upgrade", help="Upgrade the database to REVISION (default: the latest). Asks nothing unless --prompt."
)
@click.option("--prompt", is_flag=True, help="Ask for confirmation first (needs a terminal).")
@click.option("--no-prompt", "_no_prompt", is_flag=True, hidden=True, help="The default; accepted as before.")
@click.option("--sql", is_flag=True, help="Print the SQL of the migration instead of running it.")
@click.argument("revision", default="head")
def database_upgrade(prompt: bool, _no_prompt: bool, sql: bool, revision: str) -> None:
    if prompt:
        click.confirm(f"Migrate the database to the `{revision}` revision?", abort=True)
    upgrade_database(get_settings(), revision=revision, sql=sql)
    if not sql:
        click.echo(f"database at revision {revision}", err=True)


#: ``run`` replaces Litestar's own (app/cli_serve.py)
COMMANDS = (up, run_command, users_group, tokens_group, workers_group, credentials_group, metrics_group)


def register_commands(cli: click.Group) -> None:
    from advanced_alchemy.extensions.litestar.cli import database_group

    for command in COMMANDS:
        cli.add_command(command)
    # advanced-alchemy's `database upgrade` asks "Are you sure…?" and aborts without a terminal
    database_group.add_command(database_upgrade)


@click.group(name="voluble", commands=list(COMMANDS))
def standalone() -> None:
    """Voluble's own commands, run without loading the web application."""
