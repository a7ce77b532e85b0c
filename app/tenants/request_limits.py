"""Request budgets (API rate limits), counted in Redis with ``limits`` and shared by every web process.

A budget is N requests per 60-second window per bucket: a bearer token (an API client's tokens share
their client's bucket) on ``/api/v1``, a client IP on ``POST /oauth/token`` and the sign-in form.
``RequestLimitMiddleware`` spends one unit per request with ONE Redis round trip (``limits``'
``INCRBY`` + ``EXPIRE`` script on its redis-py storage) and answers ``429`` with ``Retry-After`` once the
budget is spent; every answer it lets through carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds). The windows are fixed and aligned to the clock, shifted per bucket (a
stable offset from the bucket's name, so resets do not all fall on the same second): every process
computes the same window and its reset without asking Redis. Only Redis 6.2 commands (EVALSHA, INCRBY,
EXPIRE). Redis unreachable: the request is served without the headers (fail open), one warning per
outage, and Redis is left alone for a few seconds. See docs/decisions/0034-api-rate-limits.md.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.errors import StorageError
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.exceptions import NotAuthorizedException
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.exceptions import RedisError

from app.config import RateLimitSettings, Settings
from app.errors import TooManyRequests
from app.logging import get_logger
from app.tenants.principal import Principal

log = get_logger(__name__)

WINDOW_SECONDS = 60
STATE_KEY = "request_limiter"
#: Redis is not asked again for this long after it failed (requests pass meanwhile)
PAUSE_SECONDS = 5.0
#: a Redis that does not answer within this long counts as down for the request at hand
TIMEOUT_SECONDS = 0.5

Bucket = Literal["credential", "refused", "oauth", "login"]
DETAILS: dict[Bucket, str] = {
    "credential": "This token has spent its {limit} API requests for this minute. Try again in {wait} seconds.",
    "refused": "Too many requests without a valid token from your address. Try again in {wait} seconds.",
    "oauth": "Too many token requests from your address. Try again in {wait} seconds.",
    "login": "Too many sign-in attempts from your network. Try again in {wait} seconds.",
}


@dataclass(frozen=True)
class Window:
    """Where a bucket stands after a request: its budget, what is left, seconds until the window ends."""

    limit: int
    remaining: int
    reset: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        fields = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            fields["Retry-After"] = str(self.reset)
        return fields


def storage_uri(redis_url: str) -> str:
    """``limits``' name of a redis-py URL (``redis://`` -> ``async+redis://``, ``unix://`` -> ``async+redis+unix://``)."""
    if redis_url.startswith("unix://"):
        return "async+redis+" + redis_url
    return "async+" + redis_url


class RequestLimiter:
    """Fixed windows of ``WINDOW_SECONDS`` in Redis, through ``limits``' async redis-py storage (its own
    small connection pool with short timeouts: a slow Redis never holds a request for long)."""

    def __init__(
        self, settings: RateLimitSettings, redis_url: str, prefix: str, *, pause: float = PAUSE_SECONDS
    ) -> None:
        self.settings = settings
        self.pause = pause
        self.storage = RedisStorage(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix=prefix,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        self._paused_until = 0.0
        self._down = False

    async def hit(self, bucket: str, limit: int, now: float | None = None) -> Window | None:
        """Spend one request of ``bucket`` (budget ``limit``); None when there is no limit or Redis is down."""
        if limit <= 0 or time.monotonic() < self._paused_until:
            return None
        now = time.time() if now is None else now
        index, into = divmod(now + zlib.crc32(bucket.encode()) % WINDOW_SECONDS, WINDOW_SECONDS)
        key = RateLimitItemPerMinute(limit).key_for(bucket, int(index))
        try:
            count = await self.storage.incr(key, WINDOW_SECONDS)
        except (RedisError, StorageError, OSError, TimeoutError) as exc:
            self._paused_until = time.monotonic() + self.pause
            if not self._down:  # one warning per outage, not one per retry
                self._down = True
                log.warning(
                    "API rate limits not enforced: Redis unreachable",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_every_seconds=self.pause,
                )
            return None
        if self._down:
            self._down = False
            log.info("API rate limits enforced again: Redis reachable")
        reset = max(1, math.ceil(WINDOW_SECONDS - into))
        return Window(limit=limit, remaining=max(limit - count, 0), reset=reset, allowed=count <= limit)

    async def close(self) -> None:
        await self.storage.bridge.storage.aclose()  # type: ignore[attr-defined]


def _hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]  # no addresses in Redis


def bucket_of(kind: Bucket, scope: Scope, settings: RateLimitSettings) -> tuple[str, int] | None:
    """(bucket name, budget) of a request; None when it has none (no principal on an API route)."""
    if kind == "credential":
        principal = scope.get("user")
        if not isinstance(principal, Principal):
            return None
        budget = principal.rate_limit if principal.rate_limit is not None else settings.api_per_token
        if principal.kind == "client":
            return f"client:{principal.id}", budget
        return f"token:{principal.token_id or principal.id}", budget
    client = scope.get("client")
    ip = client[0] if client and client[0] else "unknown"
    # a request refused for its token is a credential attempt, as a token request is: the same budget
    return f"{kind}:{_hashed(ip)}", settings.login_per_ip if kind == "login" else settings.oauth_per_ip


class RequestLimitMiddleware:
    """Spends one request of the caller's bucket; 429 past the budget, else the answer gets the headers.

    ``kind="credential"`` goes after the bearer authentication (it reads the principal);
    ``"refused"`` before it: it counts the requests it refuses (401: no valid token, hence no
    budget of their own) per client IP, so that they too carry the headers and a flood of guessed
    tokens meets a 429 rather than a token lookup each; ``"oauth"`` and ``"login"`` count per client IP."""

    def __init__(self, app: ASGIApp, kind: Bucket = "credential") -> None:
        self.app = app
        self.kind: Bucket = kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter: RequestLimiter | None = scope["app"].state.get(STATE_KEY) if scope["type"] == "http" else None
        if self.kind == "refused":
            await self._counting_refusals(limiter, scope, receive, send)
            return
        found = bucket_of(self.kind, scope, limiter.settings) if limiter else None
        window = await limiter.hit(*found) if limiter and found else None
        if window is None:
            await self.app(scope, receive, send)
            return
        if not window.allowed:
            raise TooManyRequests(DETAILS[self.kind].format(limit=window.limit, wait=window.reset), window.headers())
        extra = [(name.lower().encode(), value.encode()) for name, value in window.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _counting_refusals(
        self, limiter: RequestLimiter | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            await self.app(scope, receive, send)
        except NotAuthorizedException as exc:
            found = bucket_of(self.kind, scope, limiter.settings) if limiter else None
            window = await limiter.hit(*found) if limiter and found else None
            if window is None:
                raise
            if not window.allowed:
                detail = DETAILS[self.kind].format(limit=window.limit, wait=window.reset)
                raise TooManyRequests(detail, window.headers()) from exc
            exc.headers = {**(exc.headers or {}), **window.headers()}
            raise


class RequestLimitsPlugin(InitPluginProtocol):
    """Opens the limiter (its Redis pool) with the application and closes it after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.settings

        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
            # the queue prefix separates deployments (and test runs) sharing one Redis; default "voluble:rate"
            limiter = RequestLimiter(settings.rate_limits, settings.redis.url, f"{settings.redis.queue_prefix}:rate")
            app.state[STATE_KEY] = limiter
            try:
                yield
            finally:
                app.state.pop(STATE_KEY, None)
                await limiter.close()

        app_config.lifespan.append(lifespan)
        return app_config
