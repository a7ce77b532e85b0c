"""Send rate limiter benchmark: the cost of a turn, and the pace several processes keep together.

    uv run python bench/send_rate.py [--redis-url URL] [-n 5000] [--rate 50] [--seconds 4] [--processes 2]

1. Cost: ``-n`` turns (``Pacer.reserve``, one Lua script) against ``-n`` bare ``PING``s on the same
   Redis and connection, one at a time: turns/s, PINGs/s and their ratio (``ratio: X.XX``).
2. Pace: ``--processes`` processes take turns from one bucket at ``--rate`` per second for
   ``--seconds`` (each sleeping until its turn, as the send job does), and record when they woke: the
   rate achieved and the most sends any one-second window held (decision 0030, docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def cost(url: str, n: int) -> tuple[float, float]:
    from redis.asyncio import Redis

    from app.servicehost.ratelimit import Pacer

    redis = Redis.from_url(url)
    pacer = Pacer(redis, "bench")
    key = f"bench:send-rate:{uuid.uuid4()}"
    await redis.ping()
    started = time.perf_counter()
    for _ in range(n):
        await redis.ping()
    pings = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n):
        await pacer.reserve(key, 1000.0, max_wait=0.0)  # mostly not reserved: the script's whole path runs
    turns = n / (time.perf_counter() - started)
    await redis.delete(key)
    await redis.aclose()
    return turns, pings


def taker(url: str, key: str, rate: float, until: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> list[float]:
        from redis.asyncio import Redis

        from app.servicehost.ratelimit import Pacer

        redis = Redis.from_url(url)
        pacer = Pacer(redis, "bench")
        woke: list[float] = []

        async def one() -> None:
            while time.time() < until:
                turn = await pacer.reserve(key, rate)
                await asyncio.sleep(turn.wait)
                woke.append(time.time())

        await asyncio.gather(*(one() for _ in range(10)))  # ten jobs at once, like a worker's concurrency
        await redis.aclose()
        return woke

    out.put(asyncio.run(run()))


def most_in_a_second(moments: list[float]) -> int:
    moments = sorted(moments)
    best, j = 0, 0
    for i, t in enumerate(moments):
        while moments[j] < t - 1.0 + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    turns, pings = asyncio.run(cost(args.redis_url, args.n))
    print(f"turns/s: {turns:,.0f}  PINGs/s: {pings:,.0f}  ratio: {turns / pings:.2f}")

    key = f"bench:send-rate:{uuid.uuid4()}"
    until = time.time() + args.seconds
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(target=taker, args=(args.redis_url, key, args.rate, until, out))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    moments = [m for _ in procs for m in out.get()]
    for p in procs:
        p.join()
    inside = [m for m in moments if m <= until]
    span = max(inside) - min(inside)
    achieved = (len(inside) - 1) / span if span else 0.0
    print(
        f"rate {args.rate:g}/s over {args.processes} processes: {len(inside)} sends in {span:.2f} s, "
        f"achieved {achieved:.2f}/s, most in one second: {most_in_a_second(inside)}"
    )


if __name__ == "__main__":
    main()
