"""Metrics benchmark: what instrumentation costs, and what a scrape costs, each beside its baseline.

    uv run python bench/metrics.py [-n 200000] [--requests 3000] [--processes 1,10,100]

1. one event (``metrics.attempt_finished``, a labelled counter) and one HTTP observation (counter +
   histogram), in memory (one process) and in multiprocess mode (memory-mapped files), against an
   empty function call;
2. ``GET /health`` of a bare Litestar app in process, with and without ``metrics.http_metrics_middleware``;
3. rendering the counted metrics of P processes' files (``MultiProcessCollector``), the cost of a scrape
   once a host has run P processes (a realistic label set: 40 routes x 3 statuses, 6 services x 4 outcomes).

Phases 1 and 3 run in subprocesses: prometheus-client picks its mode when it is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def events(n: int) -> dict[str, float]:
    from app import metrics

    def nothing(service: str, outcome: str) -> None:
        return None

    out: dict[str, float] = {}
    for name, call in (("empty call", nothing), ("attempt_finished", metrics.attempt_finished)):
        start = time.perf_counter()
        for _ in range(n):
            call("log", "sent")
        out[name] = (time.perf_counter() - start) / n * 1e9
    start = time.perf_counter()
    for _ in range(n):
        metrics.HTTP_REQUESTS.labels("GET", "/api/v1/contacts", "200").inc()
        metrics.HTTP_DURATION.labels("GET", "/api/v1/contacts", "200").observe(0.004)
    out["http observation"] = (time.perf_counter() - start) / n * 1e9
    return out


def fill(directory: str) -> None:
    """One process's files with a realistic label set."""
    from app import metrics

    for i in range(40):
        for status in ("200", "404", "422"):
            metrics.HTTP_REQUESTS.labels("GET", f"/api/v1/route{i}", status).inc()
            metrics.HTTP_DURATION.labels("GET", f"/api/v1/route{i}", status).observe(0.01)
    for service in ("log", "smtp", "twilio", "telegram", "webhook", "apprise"):
        for outcome in ("sent", "failed", "skipped", "undelivered"):
            metrics.attempt_finished(service, outcome)
        metrics.SEND_DURATION.labels(service).observe(0.2)


def scrape_cost(directory: str, repeat: int = 5) -> float:
    from prometheus_client import generate_latest

    from app.metrics import process_registry

    registry = process_registry()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        generate_latest(registry)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def child(mode: str, arg: str) -> None:
    if mode == "events":
        print(json.dumps(events(int(arg))))
    elif mode == "fill":
        fill(arg)
    elif mode == "scrape":
        print(json.dumps(scrape_cost(arg)))


def run_child(mode: str, arg: str, multiproc: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiproc:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc
    return subprocess.run(
        [sys.executable, __file__, "--child", mode, arg], env=env, capture_output=True, text=True, check=True
    ).stdout


async def http(requests: int) -> dict[str, float]:
    import logging

    from litestar import Litestar, get
    from litestar.testing import AsyncTestClient

    from app import metrics

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    logging.getLogger("httpx").setLevel(logging.WARNING)
    out: dict[str, float] = {}
    variants = (("bare", []), ("with metrics middleware", [metrics.http_metrics_middleware]))
    for _ in range(5):  # interleaved rounds, best of each: the machine's load varies from second to second
        for name, middleware in variants:
            async with AsyncTestClient(app=Litestar([health], middleware=middleware)) as client:
                for _ in range(100):
                    await client.get("/health")
                start = time.perf_counter()
                for _ in range(requests // 5):
                    await client.get("/health")
                out[name] = max(out.get(name, 0.0), requests // 5 / (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200_000, help="events per timing")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--processes", default="1,10,100", help="numbers of process files to scrape")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="voluble-metrics-bench-"))
    try:
        print(f"1. one event, ns (n={args.n}):")
        memory = json.loads(run_child("events", str(args.n), None))
        (work / "events").mkdir()
        mapped = json.loads(run_child("events", str(args.n), str(work / "events")))
        for name in memory:
            print(f"   {name:18} in memory {memory[name]:8.0f}   multiprocess {mapped[name]:8.0f}")
        print(f"2. GET /health in process ({args.requests} requests, best of 5 interleaved rounds):")
        rates = asyncio.run(http(args.requests))
        for name, rate in rates.items():
            print(f"   {name:24} {rate:8.0f} req/s")
        print(f"   ratio with/bare: {rates['with metrics middleware'] / rates['bare']:.2f}")
        print("3. a scrape of the counted metrics, by process files on the host:")
        template = work / "one"
        template.mkdir()
        run_child("fill", str(template), str(template))
        files = list(template.glob("*.db"))
        for count in (int(p) for p in args.processes.split(",")):
            target = work / f"p{count}"
            target.mkdir()
            for pid in range(count):
                for f in files:
                    kind = f.name.rsplit("_", 1)[0]
                    shutil.copy(f, target / f"{kind}_{100000 + pid}.db")
            ms = json.loads(run_child("scrape", str(target), str(target)))
            print(f"   {count:5} processes: {ms:8.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
