"""The one core plugin: wires settings, database, Redis, queues, sessions, CSRF, templates and routes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from advanced_alchemy.exceptions import RepositoryError
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from click import Group
from litestar import Litestar, Request, Response, Router
from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins import CLIPluginProtocol, InitPluginProtocol
from litestar.plugins.flash import FlashConfig, FlashPlugin
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from redis.asyncio import Redis
from saq import Queue

from app import __version__, metrics
from app.api.docs import LocalSwaggerRenderPlugin
from app.api.documented_errors import document_errors
from app.api.errors import api_exception_handler
from app.api.hooks import make_hooks_router
from app.api.metrics import metrics_endpoint
from app.api.router import make_api_router
from app.api.system import health, oauth_token, ready
from app.blasts.fanout import stopped as blast_stopped
from app.config import BASE_DIR, Settings
from app.db.config import make_sqlalchemy_config
from app.logging import configure_logging
from app.messaging.coordinator import Coordinator
from app.queues import DEFAULT_QUEUE, make_queues
from app.servicehost.registry import load_registry, startup_check
from app.tenants.request_limits import RequestLimitsPlugin
from app.web.errors import web_exception_handler
from app.web.router import make_web_router
from app.web.security_headers import security_headers_hook
from app.web.templating import register_globals

JSON_PREFIXES = ("/api/", "/oauth/", "/hooks/", "/health", "/ready", "/schema", "/metrics")


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if request.url.path.startswith(JSON_PREFIXES):
        return api_exception_handler(request, exc)
    return web_exception_handler(request, exc)


def _provide_settings(state: State) -> Settings:
    return state.settings


def _provide_redis(state: State) -> Redis:
    return state.redis


def _provide_queue(state: State) -> Queue:
    return state.queue


def _provide_coordinator(state: State) -> Coordinator:
    return state.coordinator


class CorePlugin(InitPluginProtocol, CLIPluginProtocol):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlalchemy = make_sqlalchemy_config(settings)

    def on_cli_init(self, cli: Group) -> None:
        from app.cli import register_commands

        register_commands(cli)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.settings
        configure_logging(settings.log_level, settings.log_json)
        key = hashlib.sha256(("session:" + settings.security.secret_key).encode()).digest()
        not_browser = ["/api", "/oauth", "/hooks", "/static", "/schema", "/health", "/ready", "/metrics"]

        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
            app.state.redis = Redis.from_url(settings.redis.url)
            app.state.queues = make_queues(settings)
            app.state.queue = app.state.queues[DEFAULT_QUEUE]
            for queue in app.state.queues.values():
                await queue.connect()
            app.state.coordinator = Coordinator(
                settings=settings,
                registry=load_registry(settings),
                queues=app.state.queues,
                send_timeout=settings.worker.send_timeout,
                heartbeat=settings.worker.heartbeat_seconds,
                stopped_blasts=blast_stopped,
            )
            # the plugin health check: load and self-test every plugin, record it for every process
            await startup_check(settings, self.sqlalchemy.create_session_maker())
            try:
                yield
            finally:
                for queue in app.state.queues.values():
                    await queue.disconnect()
                await app.state.redis.aclose()
                metrics.process_exited()

        app_config.lifespan.append(lifespan)
        app_config.on_startup.append(document_errors)  # before the OpenAPI document is first built
        templates = TemplateConfig(
            directory=BASE_DIR / "templates", engine=JinjaTemplateEngine, engine_callback=register_globals
        )
        app_config.template_config = templates
        app_config.plugins.extend(
            [
                SQLAlchemyPlugin(config=self.sqlalchemy),
                HTMXPlugin(),
                FlashPlugin(config=FlashConfig(templates)),
                RequestLimitsPlugin(settings),  # API rate limits: app/tenants/request_limits.py
            ]
        )
        app_config.csrf_config = CSRFConfig(
            secret=settings.security.secret_key,
            cookie_name="voluble_csrf",
            cookie_secure=settings.server.secure_cookies,
            cookie_httponly=True,
            header_name="x-csrftoken",
            exclude=not_browser,
        )
        app_config.middleware.insert(0, metrics.http_metrics_middleware)  # outermost: times the whole answer
        app_config.middleware.append(
            CookieBackendConfig(
                secret=key,
                key="voluble_session",
                httponly=True,
                samesite="lax",
                secure=settings.server.secure_cookies,
                max_age=settings.security.session_max_age,
                exclude=not_browser,
            ).middleware
        )
        # One top-level router carries the body-size limit: Litestar takes the app layer's
        # request_max_body_size from its constructor argument, so app_config's (set below) is ignored.
        app_config.route_handlers.append(
            Router(
                path="/",
                request_max_body_size=settings.server.max_body_bytes,
                route_handlers=[
                    health,
                    ready,
                    metrics_endpoint,
                    oauth_token,
                    make_api_router(),
                    make_hooks_router(),
                    make_web_router(),
                    create_static_files_router(
                        path="/static", directories=[BASE_DIR / "static"], include_in_schema=False
                    ),
                ],
            )
        )
        app_config.dependencies.update(
            {
                "settings": Provide(_provide_settings, sync_to_thread=False),
                "redis": Provide(_provide_redis, sync_to_thread=False),
                "queue": Provide(_provide_queue, sync_to_thread=False),
                "coordinator": Provide(_provide_coordinator, sync_to_thread=False),
            }
        )
        app_config.exception_handlers[Exception] = exception_handler
        # Registered explicitly so advanced-alchemy's plugin does not install its own plain-JSON
        # handler for RepositoryError (NotFoundError…), which would win over the handler above.
        app_config.exception_handlers[RepositoryError] = exception_handler
        app_config.request_max_body_size = settings.server.max_body_bytes
        app_config.before_send.append(security_headers_hook(settings.server))
        app_config.openapi_config = OpenAPIConfig(
            title="Voluble API",
            version=__version__,
            description="Multi-tenant messaging with servicechain fallback. Authenticate with a Bearer token.",
            path="/schema",
            # Swagger UI at /schema and /schema/swagger, from static/ (no CDN, no inline script)
            render_plugins=[LocalSwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", description="OAuth or personal token")
                }
            ),
        )
        app_config.state = State(
            {
                **app_config.state,
                "settings": settings,
                "session_maker_key": self.sqlalchemy.session_maker_app_state_key,
                "sqlalchemy_config": self.sqlalchemy,
            }
        )
        return app_config
