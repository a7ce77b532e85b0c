"""``GET /metrics``: the bearer token, the format, route templates, the queues read at scrape time, and a
run of a real web process with two real worker processes whose counters add up (docs/decisions/0033)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.asgi import create_app
from app.config import MetricsSettings, Settings
from app.queues import DEFAULT_QUEUE, QUEUE_NAMES, make_queue
from tests.conftest import World
from tests.helpers import free_port, start_worker, stop_process, worker_env
from tests.pipeline import fast_settings, new_contact, setup_chain, tenant

TOKEN = "metrics-" + "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(fast_settings(settings), metrics=MetricsSettings(token=TOKEN))


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels); parsing it proves the format."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


async def test_metrics_are_off_without_a_token(settings: Settings, engine: Any, redis: Any, db_backend: str) -> None:
    off = dataclasses.replace(settings, metrics=MetricsSettings())
    async with AsyncTestClient(app=create_app(off)) as client:
        r = await client.get("/metrics", headers=AUTH)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_metrics_refuse_a_missing_or_wrong_token(client: AsyncTestClient[Any]) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ):
        r = await client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "voluble_" not in r.text


async def test_metrics_parse_and_label_http_by_route_template(
    client: AsyncTestClient[Any], world: World, settings: Settings
) -> None:
    t = await tenant(world)
    missing = uuid.uuid4()
    assert (await client.get(f"/api/v1/contacts/{missing}", headers=t.user)).status_code == 404
    assert (await client.get("/api/v1/contacts", headers={"Authorization": "Bearer nope"})).status_code == 401
    r = await client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert r.headers["cache-control"] == "no-store"
    found = samples(r.text)
    route = "/api/v1/contacts/{contact_id}"
    assert value(found, "voluble_http_requests_total", method="GET", route=route, status="404") >= 1
    assert value(found, "voluble_http_request_duration_seconds_count", route=route, status="404") >= 1
    # raised by the authentication middleware, below the metrics middleware: counted with its status
    assert value(found, "voluble_http_requests_total", route="/api/v1/contacts", status="401") >= 1
    assert not any(str(missing) in dict(labels).get("route", "") for _, labels in found)
    # read at scrape time: every queue, and the plugin health check as recorded
    for queue in QUEUE_NAMES:
        assert ("voluble_queue_jobs", frozenset({("queue", queue), ("state", "queued")})) in found
        assert ("voluble_queue_oldest_job_age_seconds", frozenset({("queue", queue)})) in found
        assert value(found, "voluble_queue_workers", queue=queue) == 0  # no worker runs in this test
    assert value(found, "voluble_service_available", service="log") == 1
    assert value(found, "voluble_metrics_source_up", source="redis") == 1
    assert value(found, "voluble_metrics_source_up", source="database") == 1


async def test_queue_depth_and_oldest_job_age_come_from_redis(client: AsyncTestClient[Any], settings: Settings) -> None:
    queue = make_queue(settings, DEFAULT_QUEUE)
    await queue.connect()
    try:
        for _ in range(3):
            await queue.enqueue("nothing_here", timeout=5, retries=1)
        await queue.enqueue("nothing_here", timeout=5, retries=1, scheduled=int(time.time()) + 600)
        await asyncio.sleep(1.2)
        found = samples((await client.get("/metrics", headers=AUTH)).text)
    finally:
        await queue.disconnect()
    assert value(found, "voluble_queue_jobs", queue=DEFAULT_QUEUE, state="queued") == 3
    assert value(found, "voluble_queue_jobs", queue=DEFAULT_QUEUE, state="scheduled") == 1
    assert 1.0 <= value(found, "voluble_queue_oldest_job_age_seconds", queue=DEFAULT_QUEUE) < 60
    assert value(found, "voluble_queue_oldest_job_age_seconds", queue="send") == 0


# -- a real run: one web process, two worker processes, one metrics directory --------------------------------

N = 24


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


@pytest.fixture
def processes(
    settings: Settings, engine: Any, metrics_dir: Path
) -> Iterator[tuple[str, str, list[subprocess.Popen[bytes]]]]:
    extra = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "VOLUBLE_METRICS_TOKEN": TOKEN,
        "VOLUBLE_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=worker_env(settings, **extra),
        stdout=subprocess.DEVNULL,
    )
    workers = [start_worker(settings, **extra) for _ in range(2)]
    exporter_port = free_port()  # the exporter of a host without a web process, on the same directory
    exporter = subprocess.Popen(
        [sys.executable, "-m", "app", "metrics", "serve", "--host", "127.0.0.1", "--port", str(exporter_port)],
        env=worker_env(settings, **extra),
    )
    try:
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{exporter_port}/metrics", workers
    finally:
        for proc in (web, exporter, *workers):
            proc.terminate()  # all at once, then each waited for
        for proc in (web, exporter, *workers):
            stop_process(proc)


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except httpx.TransportError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def _per_process(metrics_dir: Path, pid: int, name: str, **labels: str) -> float:
    """What one process counted, from its own file (the scrape sums these)."""
    files = [str(p) for p in metrics_dir.glob(f"*_{pid}.db")]
    found: Samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for metric in MultiProcessCollector.merge(files, accumulate=True)
        for s in metric.samples
    }
    return value(found, name, **labels)


@pytest.mark.parametrize("db_backend", ["postgres"])  # production's pairing (PostgreSQL, Redis server); < 60 s
async def test_counters_add_up_across_a_web_and_two_worker_processes(
    world: World, processes: tuple[str, str, list[subprocess.Popen[bytes]]], metrics_dir: Path
) -> None:
    base, exporter, workers = processes
    t = await tenant(world, credits=N + 5)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def scrape() -> Samples:
            r = await http.get("/metrics", headers=AUTH)
            assert r.status_code == 200, r.text
            return samples(r.text)

        async def both_workers_up() -> bool:
            found = await scrape()
            return all(value(found, "voluble_queue_workers", queue=q) == 2 for q in ("send", "events"))

        await _until(both_workers_up, 120, "two workers on the send and events queues")
        client: Any = http  # the helpers of tests/pipeline.py speak to any httpx-style client
        chain = await setup_chain(client, t, ["log"])
        contact = await new_contact(client, t)
        before = await scrape()
        assert value(before, "voluble_messages_accepted_total") == 0
        body = {"contact_id": contact, "servicechain_id": chain, "content": "Hi {{ first_name }}"}
        half = N // 2
        for _ in range(half):
            assert (await http.post("/api/v1/messages", json=body, headers=t.user)).status_code == 201
        during = await scrape()  # scraped during the run: the counters are moving
        assert value(during, "voluble_messages_accepted_total", kind="single") == half
        for _ in range(N - half):
            assert (await http.post("/api/v1/messages", json=body, headers=t.user)).status_code == 201

        async def all_sent() -> Samples | None:
            found = await scrape()
            return found if value(found, "voluble_attempts_total", service="log", outcome="sent") >= N else None

        found = await _until(all_sent, 90, f"{N} attempts sent by log")
        assert (await http.get(exporter)).status_code == 401
        host = samples((await http.get(exporter, headers=AUTH)).text)
    # `voluble metrics serve` shows the same counters, without the instance's gauges (the web's /metrics has them)
    assert value(host, "voluble_attempts_total", service="log", outcome="sent") == N
    assert value(host, "voluble_messages_accepted_total") == N
    assert not any(name.startswith("voluble_queue_") for name, _ in host)
    assert value(found, "voluble_messages_accepted_total", kind="single") == N
    assert value(found, "voluble_attempts_total", service="log", outcome="sent") == N
    assert value(found, "voluble_attempts_total", outcome="failed") == 0
    assert value(found, "voluble_send_duration_seconds_count", service="log") == N
    assert value(found, "voluble_send_duration_seconds_bucket", service="log", le="+Inf") == N
    route = "/api/v1/messages"
    assert value(found, "voluble_http_requests_total", method="POST", route=route, status="201") == N
    assert value(found, "voluble_http_request_duration_seconds_count", method="POST", route=route) == N
    for queue in QUEUE_NAMES:
        assert ("voluble_queue_jobs", frozenset({("queue", queue), ("state", "active")})) in found
    assert value(found, "voluble_service_available", service="log") == 1
    # accepted messages and sent outcomes went through the group commits (decision 0037), each item once
    assert value(found, "voluble_group_commit_items_total", writer="accept") == N
    assert value(found, "voluble_group_commit_items_total", writer="sent") == N
    assert 1 <= value(found, "voluble_group_commit_transactions_total", writer="sent") <= N
    # the sum is of two worker processes, each of which did a part of the work
    sent_by = [_per_process(metrics_dir, w.pid, "voluble_send_duration_seconds_count", service="log") for w in workers]
    assert sum(sent_by) == N and all(sent_by), sent_by
    applied_by = [
        _per_process(metrics_dir, w.pid, "voluble_attempts_total", service="log", outcome="sent") for w in workers
    ]
    assert sum(applied_by) == N, applied_by


def test_the_readme_scrape_config_and_alert_rules_parse_and_name_real_metrics() -> None:
    import re

    import yaml

    from app import metrics

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Metrics") : readme.index("## REST API")]
    config, rules = (yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S))
    for job in config["scrape_configs"]:
        assert job["authorization"]["type"] == "Bearer" and job["static_configs"][0]["targets"]
    alerts = rules["groups"][0]["rules"]
    assert [a["alert"] for a in alerts] == ["VolubleQueueBacklog", "VolubleServiceFailing", "VolubleNoWorker"]
    for alert in alerts:
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"\d+[smh]", alert["for"]) and alert["labels"]["severity"]
    counted = [metrics.HTTP_REQUESTS, metrics.MESSAGES_ACCEPTED, metrics.ATTEMPTS, metrics.RECEIPTS]
    known = {f"{m._name}_total" for m in counted}
    known |= {family.name for family in asyncio.run(metrics.instance_families({}, {}))}
    used = set(re.findall(r"\bvoluble_[a-z_]+", " ".join(a["expr"] for a in alerts)))
    assert used and used <= known, used - known
