"""``voluble run``: the web server (uvicorn), with Voluble's graceful shutdown.

On SIGTERM (or Ctrl-C) uvicorn closes its listening socket, closes idle keep-alive connections, lets the
requests in flight finish for ``VOLUBLE_WEB_SHUTDOWN_GRACE`` seconds (then cancels them), runs the
application's shutdown and exits 0. Litestar's own ``run`` gives uvicorn no such timeout (it waits for
ever) and dies of the SIGTERM it re-raises (exit status 143); this one replaces it under the same name.
"""

from __future__ import annotations

import math
import signal
from typing import Any

import click

from app.config import get_settings

APP = "app.asgi:create_app"


def exit_cleanly(signum: int, _frame: Any) -> None:
    """A SIGTERM or SIGINT handler: end with status 0, as asked (uvicorn re-raises the signal that stopped it
    once it has shut down)."""
    raise SystemExit(0)


@click.command(name="run", help="Run the web server (uvicorn); SIGTERM finishes the requests in flight, then exits.")
@click.option("--host", default=None, help="Bind address (default: VOLUBLE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: VOLUBLE_PORT).")
@click.option(
    "-W", "--wc", "--web-concurrency", "web_concurrency", type=int, default=1, show_default=True,
    help="Web processes under one uvicorn supervisor.",
)  # fmt: skip
@click.option("-r", "--reload", is_flag=True, help="Restart on code changes (development).")
@click.option(
    "--shutdown-grace",
    type=float,
    default=None,
    help="Seconds for the requests in flight on SIGTERM (default: VOLUBLE_WEB_SHUTDOWN_GRACE).",
)
def run_command(
    host: str | None, port: int | None, web_concurrency: int, reload: bool, shutdown_grace: float | None
) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, exit_cleanly)
    import uvicorn

    server = get_settings().server
    uvicorn.run(
        APP,
        factory=True,
        host=host or server.host,
        port=port or server.port,
        workers=max(web_concurrency, 1) if not reload else None,
        reload=reload,
        timeout_graceful_shutdown=math.ceil(server.shutdown_grace if shutdown_grace is None else shutdown_grace),
    )
