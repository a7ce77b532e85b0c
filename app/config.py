"""Settings read from ``VOLUBLE_*`` environment variables (and a ``.env`` file), with local defaults."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"VOLUBLE_{name}", default)


def _env_bool(name: str, default: bool = False) -> bool:
    raw = _env(name, "")
    if not raw:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = _env(name, "")
    return int(raw) if raw.strip() else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, "")
    return float(raw) if raw.strip() else default


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated value, each item stripped, empty items dropped."""
    return tuple(item.strip() for item in _env(name).split(",") if item.strip())


def _var_dir() -> Path:
    path = Path(_env("VAR_DIR", str(BASE_DIR / "var")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _secret_key(var_dir: Path) -> str:
    """The configured secret, or one generated once into ``var/secret_key`` (mode 600)."""
    configured = _env("SECRET_KEY")
    if configured:
        return configured
    key_file = var_dir / "secret_key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return key_file.read_text().strip()


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    echo: bool = False
    pool_size: int = 10
    #: a pooled connection idle this long is checked (a round trip) before use; 0: before every use
    ping_after: float = 1.0


@dataclass(frozen=True)
class RedisSettings:
    url: str
    embedded: bool  # True when no VOLUBLE_REDIS_URL was given
    queue_prefix: str = "voluble"  # lets several deployments (or test runs) share one Redis


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    secure_cookies: bool = False
    max_body_bytes: int = 1_048_576
    #: seconds a web process gives the requests in flight on SIGTERM before it cancels them (uvicorn's
    #: ``timeout_graceful_shutdown``); it accepts no new connection meanwhile
    shutdown_grace: float = 10.0


@dataclass(frozen=True)
class SecuritySettings:
    secret_key: str
    session_max_age: int = 60 * 60 * 12
    login_max_failures_account: int = 5
    login_max_failures_ip: int = 20
    login_window_seconds: int = 15 * 60
    reset_token_ttl_seconds: int = 60 * 60
    #: how long the link mailed to a user created without a password works
    invite_token_ttl_seconds: int = 7 * 24 * 60 * 60
    #: forgot-password requests allowed per address and per client IP in a window
    reset_max_per_address: int = 5
    reset_max_per_ip: int = 20
    reset_window_seconds: int = 60 * 60
    access_token_ttl_seconds: int = 60 * 60
    #: seconds a process trusts what a bearer token resolved to (revocation elsewhere applies within it; 0: off)
    token_cache_seconds: float = 1.0
    allow_private_targets: bool = False
    #: keys of the service credentials at rest, newest first (``VOLUBLE_CREDENTIALS_KEY=new,old``): the first
    #: encrypts, any decrypts; none: derived from ``secret_key`` (always readable too, see app/plugins/crypto.py)
    credentials_keys: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PasswordHashSettings:
    """argon2id cost. The defaults are argon2-cffi's (RFC 9106's second recommendation: t=3, 64 MiB, p=4);
    lower them only where passwords are throwaway (the test suite), never in production."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4

    @classmethod
    def from_env(cls) -> PasswordHashSettings:
        load_dotenv(BASE_DIR / ".env", override=False)
        parallelism = max(_env_int("PASSWORD_HASH_PARALLELISM", cls.parallelism), 1)
        return cls(
            time_cost=max(_env_int("PASSWORD_HASH_TIME_COST", cls.time_cost), 1),
            memory_kib=max(_env_int("PASSWORD_HASH_MEMORY_KIB", cls.memory_kib), 8 * parallelism),
            parallelism=parallelism,
        )


@dataclass(frozen=True)
class MailSettings:
    backend: str = "log"  # "log" writes mails to the log; "smtp" sends them
    host: str = "127.0.0.1"
    port: int = 25
    username: str = ""
    password: str = field(default="", repr=False)
    security: str = "none"  # none | starttls | tls
    from_address: str = "voluble@localhost"


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 10
    #: seconds a plugin gets to send one message
    send_timeout: float = 30.0
    #: how often the sweep (lost-work recovery, due scheduled messages) runs
    sweep_seconds: int = 10
    #: how long a pending message or attempt sits before the sweep looks at it
    stale_seconds: int = 30
    #: a running send job proves it is alive this often; silent for longer, its worker is taken as dead
    heartbeat_seconds: int = 10
    #: seconds a worker process gives the jobs in flight on SIGTERM (it takes no new one meanwhile); a job
    #: still running then is cancelled and put back on its queue (docs/decisions/0036)
    shutdown_grace: float = 20.0
    #: a send waits in its job at most this long for its turn under the service's rate limit; a later
    #: turn re-schedules the job to it (app/servicehost/ratelimit.py; 3 to 10 s, within the job's timeout)
    rate_max_wait: float = 3.0


@dataclass(frozen=True)
class MetricsSettings:
    #: the bearer token of ``GET /metrics`` (``VOLUBLE_METRICS_TOKEN``); empty: the endpoint is off (404)
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class RateLimitSettings:
    """Requests allowed a minute (0: no limit), counted in Redis and shared by every web process
    (``app/tenants/request_limits.py``, docs/decisions/0034)."""

    #: per bearer token (an API client's tokens share one budget); a sysadmin may set another per organization
    api_per_token: int = 1200
    #: ``POST /oauth/token`` per client IP
    oauth_per_ip: int = 60
    #: the sign-in form (``POST /login``) per client IP; failures are also throttled per account (0003)
    login_per_ip: int = 30


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    redis: RedisSettings
    server: ServerSettings
    security: SecuritySettings
    mail: MailSettings
    worker: WorkerSettings
    var_dir: Path
    log_level: str = "INFO"
    log_json: bool = False
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)

    @classmethod
    def from_env(cls) -> Settings:
        load_dotenv(BASE_DIR / ".env", override=False)
        var_dir = _var_dir()
        host = _env("HOST", "127.0.0.1")
        port = _env_int("PORT", 8000)
        public_url = _env("PUBLIC_URL", f"http://{host}:{port}").rstrip("/")
        redis_url = _env("REDIS_URL")
        return cls(
            database=DatabaseSettings(
                url=_env("DATABASE_URL", f"sqlite+aiosqlite:///{var_dir / 'voluble.db'}"),
                echo=_env_bool("DATABASE_ECHO"),
                pool_size=_env_int("DATABASE_POOL_SIZE", 10),
                ping_after=_env_float("DATABASE_PING_AFTER", 1.0),
            ),
            redis=RedisSettings(
                url=redis_url or "redis://127.0.0.1:6379/0",
                embedded=not redis_url,
                queue_prefix=_env("QUEUE_PREFIX", "voluble"),
            ),
            server=ServerSettings(
                host=host,
                port=port,
                public_url=public_url,
                secure_cookies=_env_bool("SECURE_COOKIES", public_url.startswith("https://")),
                max_body_bytes=_env_int("MAX_BODY_BYTES", 1_048_576),
                shutdown_grace=float(_env("WEB_SHUTDOWN_GRACE", "10")),
            ),
            security=SecuritySettings(
                secret_key=_secret_key(var_dir),
                session_max_age=_env_int("SESSION_MAX_AGE", 60 * 60 * 12),
                login_max_failures_account=_env_int("LOGIN_MAX_FAILURES", 5),
                login_max_failures_ip=_env_int("LOGIN_MAX_FAILURES_IP", 20),
                login_window_seconds=_env_int("LOGIN_WINDOW_SECONDS", 15 * 60),
                reset_token_ttl_seconds=_env_int("RESET_TOKEN_TTL", 60 * 60),
                invite_token_ttl_seconds=_env_int("INVITE_TOKEN_TTL", 7 * 24 * 60 * 60),
                reset_max_per_address=_env_int("RESET_MAX_PER_ADDRESS", 5),
                reset_max_per_ip=_env_int("RESET_MAX_PER_IP", 20),
                reset_window_seconds=_env_int("RESET_WINDOW_SECONDS", 60 * 60),
                access_token_ttl_seconds=_env_int("ACCESS_TOKEN_TTL", 60 * 60),
                token_cache_seconds=min(_env_float("TOKEN_CACHE_SECONDS", 1.0), 2.0),
                allow_private_targets=_env_bool("ALLOW_PRIVATE_TARGETS"),
                credentials_keys=_env_list("CREDENTIALS_KEY"),
            ),
            mail=MailSettings(
                backend=_env("MAIL_BACKEND", "log"),
                host=_env("SMTP_HOST", "127.0.0.1"),
                port=_env_int("SMTP_PORT", 25),
                username=_env("SMTP_USERNAME"),
                password=_env("SMTP_PASSWORD"),
                security=_env("SMTP_SECURITY", "none"),
                from_address=_env("MAIL_FROM", "voluble@localhost"),
            ),
            worker=WorkerSettings(
                concurrency=_env_int("WORKER_CONCURRENCY", 10),
                send_timeout=float(_env("SEND_TIMEOUT", "30")),
                sweep_seconds=_env_int("SWEEP_SECONDS", 10),
                stale_seconds=_env_int("STALE_SECONDS", 30),
                heartbeat_seconds=_env_int("HEARTBEAT_SECONDS", 10),
                shutdown_grace=float(_env("SHUTDOWN_GRACE", "20")),
                rate_max_wait=min(max(float(_env("RATE_MAX_WAIT", "3") or 3), 3.0), 10.0),
            ),
            var_dir=var_dir,
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            log_json=_env_bool("LOG_JSON"),
            metrics=MetricsSettings(token=_env("METRICS_TOKEN").strip()),
            rate_limits=RateLimitSettings(
                api_per_token=max(_env_int("API_RATE_LIMIT", 1200), 0),
                oauth_per_ip=max(_env_int("OAUTH_RATE_LIMIT_IP", 60), 0),
                login_per_ip=max(_env_int("LOGIN_RATE_LIMIT_IP", 30), 0),
            ),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
