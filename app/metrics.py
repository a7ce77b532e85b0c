"""Prometheus metrics: every instrument of Voluble, the HTTP middleware, and the scrape (docs/decisions/0033).

The instrumented code calls one function of this module per event (``metrics.message_accepted()``,
``metrics.attempt_finished(service, outcome)``, …); nothing else of ``app`` imports ``prometheus_client``.

Several processes: prometheus-client's multiprocess mode. Every process of a host that has
``PROMETHEUS_MULTIPROC_DIR`` in its environment when it starts writes its counters and histograms to
its own files there (memory-mapped: an increment is a write to memory, no I/O, no Redis round trip);
a scrape of ``/metrics`` sums the files of every process of the host, the dead ones included (a
counter never goes back). ``voluble up`` empties the directory at start and sets it for the processes
it starts; a process marks itself dead on exit (its live gauges leave the sum). Without the variable,
a process counts in memory and ``/metrics`` shows that process alone.

What lives in Redis or the database (queue depths, the oldest job's age, live SAQ workers, service
status) is read at scrape time, once for the whole instance, not counted by the processes.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import REGISTRY, Collector

from app.logging import get_logger

log = get_logger(__name__)

#: the exposition format's content type (text format 0.0.4)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: plugin calls: from a local outbox (ms) to a provider's API that takes its time (the send timeout is 30 s)
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "voluble_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "voluble_http_request_duration_seconds",
    "Time from the request to the end of its answer, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_IN_PROGRESS = Gauge(
    "voluble_http_requests_in_progress", "HTTP requests being answered", multiprocess_mode="livesum"
)
MESSAGES_ACCEPTED = Counter(
    "voluble_messages_accepted", "Outgoing messages accepted (single: API and compose page; blast: fan-out)", ["kind"]
)
ATTEMPTS = Counter(
    "voluble_attempts",
    "Attempts finished, by service and outcome (sent, failed, skipped: unusable for the message, "
    "undelivered: a provider's late failure of a sent attempt)",
    ["service", "outcome"],
)
SEND_DURATION = Histogram(
    "voluble_send_duration_seconds",
    "Time a plugin took to send (or fail), by service",
    ["service"],
    buckets=SEND_BUCKETS,
)
RECEIPTS = Counter(
    "voluble_receipts",
    "Delivery receipts applied, by service and result (moved, unchanged, fell_back, unknown)",
    ["service", "result"],
)
SWEEP_RECOVERIES = Counter(
    "voluble_sweep_recoveries",
    "What the sweep put back (requeued: a send job Redis lost; replayed: a lost event; lost: a dead worker's "
    "attempt failed; dispatched: a pending message left behind or a scheduled one now due)",
    ["kind"],
)
GROUP_COMMITS = Counter(
    "voluble_group_commit_transactions",
    "Transactions of a group commit (accept: the web's accepted messages; sent: a worker's sent outcomes)",
    ["writer"],
)
GROUP_COMMIT_ITEMS = Counter(
    "voluble_group_commit_items",
    "Items written by a group commit's transactions (divided by the transactions: the mean batch)",
    ["writer"],
)


# -- the instrumented points ---------------------------------------------------------------------


def message_accepted(count: int = 1, kind: str = "single") -> None:
    if count:
        MESSAGES_ACCEPTED.labels(kind).inc(count)


def attempt_finished(service: str, outcome: object) -> None:
    """An attempt's outcome was recorded (``AttemptOutcome`` or its value)."""
    ATTEMPTS.labels(service, str(getattr(outcome, "value", outcome))).inc()


def send_timer(service: str) -> AbstractContextManager[Any]:
    """``with metrics.send_timer(service):`` around a plugin's send: observes how long it took, whatever its end."""
    return SEND_DURATION.labels(service).time()


def group_committed(writer: str, items: int) -> None:
    """A group commit's transaction committed ``items`` write sets."""
    GROUP_COMMITS.labels(writer).inc()
    GROUP_COMMIT_ITEMS.labels(writer).inc(items)


def receipt_applied(service: str, result: str) -> None:
    RECEIPTS.labels(service, result).inc()


def sweep_recovered(counts: Mapping[str, int]) -> None:
    for kind, count in counts.items():
        if count:
            SWEEP_RECOVERIES.labels(kind).inc(count)


# -- HTTP ------------------------------------------------------------------------------------------


def http_metrics_middleware(app: Any) -> Any:
    """ASGI middleware (app level, so after routing): counts and times each HTTP request under its
    route template (``/api/v1/messages/{message_id}``, never the raw path: one series per route)."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        HTTP_IN_PROGRESS.inc()
        try:
            await app(scope, receive, send_wrapper)
        except Exception as exc:  # raised by a middleware below: the exception handler above answers it
            status[0] = int(getattr(exc, "status_code", 500))
            raise
        finally:
            HTTP_IN_PROGRESS.dec()
            labels = (scope.get("method", "GET"), scope.get("path_template") or "unmatched", status[0])
            children = _HTTP_CHILDREN.get(labels) or _http_children(labels)
            children[0].inc()
            children[1].observe(time.perf_counter() - start)

    return middleware


#: the labelled series of each (method, route, status) seen: ``.labels()`` costs more than the increment
_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _http_children(labels: tuple[str, str, int]) -> tuple[Any, Any]:
    method, route, status = labels
    children = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route, str(status)))
    _HTTP_CHILDREN[labels] = children
    return children


# -- processes -------------------------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create ``path`` and empty it of an earlier run's files: the start of a host's processes."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def process_exited(pid: int | None = None, path: Path | None = None) -> None:
    """A process of the host ended (this one by default): its live gauges leave the sum; its counters stay."""
    directory = path or multiprocess_dir()
    if directory is not None and directory.is_dir():
        mark_process_dead(pid if pid is not None else os.getpid(), str(directory))


# -- access ----------------------------------------------------------------------------------------


def authorized(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = authorization.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def serve_host(host: str, port: int, token: str) -> None:
    """Serve the counted metrics of this host's processes (``voluble metrics serve``) at ``/metrics``, behind
    the bearer token: the exporter of a host that runs workers and no web process. Blocks."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    exporter = make_wsgi_app(process_registry())

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not authorized(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"a valid bearer token is required\n"]
        return list(exporter(environ, start_response))

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

    with make_server(host, port, app, handler_class=QuietHandler) as server:
        log.info("metrics exporter", url=f"http://{host}:{port}/metrics", directory=str(multiprocess_dir()))
        with suppress(KeyboardInterrupt):  # Ctrl-C; SIGTERM ends it as well (it holds no state)
            server.serve_forever()


# -- the scrape ------------------------------------------------------------------------------------


class _Families(Collector):
    """Families computed before the scrape (reads that are async), handed to a registry of one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, documentation: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


async def queue_facts(name: str, queue: Any, now: float | None = None) -> dict[str, float]:
    """One SAQ queue as Redis holds it: jobs queued/active/scheduled, live workers, the oldest job's age.

    The age is that of the job at the head of the ``queued`` list (SAQ takes jobs from its left end),
    counted from when it was queued, or when it came due if it was scheduled."""
    info = await queue.info()
    age = 0.0
    head = await queue.redis.lindex(queue.namespace("queued"), 0)
    if head is not None:
        job = queue.deserialize(await queue.redis.get(head))
        if job is not None:
            since_ms = max(int(job.queued or 0), int(job.scheduled or 0) * 1000)
            if since_ms:
                age = max((now if now is not None else time.time()) - since_ms / 1000, 0.0)
    return {
        "queued": float(info["queued"]),
        "active": float(info["active"]),
        "scheduled": float(info["scheduled"]),
        "workers": float(len(info["workers"])),
        "oldest_age": age,
    }


async def instance_families(queues: Mapping[str, Any], services: Mapping[str, bool] | None) -> list[Metric]:
    """The gauges read at scrape time: the same for every process of the instance (aggregate them with
    ``max``). ``services``: name → available, or None when the database could not be read."""
    facts: dict[str, dict[str, float]] = {}
    redis_ok = True
    for name, queue in queues.items():
        try:
            facts[name] = await queue_facts(name, queue)
        except Exception as exc:
            redis_ok = False
            log.warning("metrics: queue unreadable", queue=name, error=repr(exc)[:200])
    families = [
        _gauge(
            "voluble_queue_jobs",
            "Jobs in a queue by state (queued: waiting for a worker; active: being run; scheduled: waiting for "
            "their time or a retry)",
            ["queue", "state"],
            (([name, state], f[state]) for name, f in facts.items() for state in ("queued", "active", "scheduled")),
        ),
        _gauge(
            "voluble_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting in a queue (0: none waiting)",
            ["queue"],
            (([name], f["oldest_age"]) for name, f in facts.items()),
        ),
        _gauge(
            "voluble_queue_workers",
            "SAQ workers taking jobs from a queue (one per worker process), from the worker info they "
            "refresh in Redis every 10 s (gone 60 s after a worker died)",
            ["queue"],
            (([name], f["workers"]) for name, f in facts.items()),
        ),
        _gauge(
            "voluble_service_available",
            "Whether a service's plugin passed its last health check (1) or is blacklisted (0)",
            ["service"],
            (([name], 1.0 if ok else 0.0) for name, ok in sorted((services or {}).items())),
        ),
        _gauge(
            "voluble_metrics_source_up",
            "Whether this scrape could read a source (redis, database)",
            ["source"],
            [(["redis"], 1.0 if redis_ok else 0.0), (["database"], 0.0 if services is None else 1.0)],
        ),
    ]
    return families


def process_registry() -> CollectorRegistry:
    """The registry of the counted metrics: every process of the host (multiprocess mode), or this one."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


async def scrape(queues: Mapping[str, Any], services: Mapping[str, bool] | None) -> bytes:
    """The text exposition of everything: the counted metrics and the instance's gauges."""
    instance = CollectorRegistry(auto_describe=False)
    instance.register(_Families(await instance_families(queues, services)))
    return generate_latest(process_registry()) + generate_latest(instance)
