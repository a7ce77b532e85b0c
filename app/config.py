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
    #: a send waits in its job at most this long for its turn under the service's rate limit; a later
    #: turn re-schedules the job to it (app/servicehost/ratelimit.py; 3 to 10 s, within the job's timeout)
    rate_max_wait: float = 3.0


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
                rate_max_wait=min(max(float(_env("RATE_MAX_WAIT", "3") or 3), 3.0), 10.0),
            ),
            var_dir=var_dir,
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            log_json=_env_bool("LOG_JSON"),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
