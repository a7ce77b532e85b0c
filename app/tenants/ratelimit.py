"""Fixed-window rate limits in Redis, shared by every process. Redis 6.2 commands only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

PREFIX = "voluble:rate"


@dataclass(frozen=True)
class RateLimit:
    """``limits`` maps a bucket kind (``"address"``, ``"ip"``…) to the attempts allowed per window.

    Every attempt counts, allowed or not; a window starts with the first attempt of a bucket and
    lasts ``window_seconds``. Values are stored hashed (no addresses in Redis)."""

    redis: Redis
    name: str
    window_seconds: int
    limits: Mapping[str, int]

    def key(self, kind: str, value: str) -> str:
        digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
        return f"{PREFIX}:{self.name}:{kind}:{digest}"

    async def hit(self, **values: str) -> int | None:
        """Count one attempt in the bucket of each ``kind=value``; the seconds to wait when any
        bucket is over its limit, else None."""
        keys = [(self.key(kind, value), self.limits[kind]) for kind, value in values.items()]
        async with self.redis.pipeline(transaction=True) as pipe:
            for key, _ in keys:
                # SET … NX EX starts the window once; INCR never touches the expiry (no EXPIRE … NX in 6.2)
                pipe.set(key, 0, ex=self.window_seconds, nx=True)
                pipe.incr(key)
                pipe.ttl(key)
            results = await pipe.execute()
        waits: list[int] = []
        for index, (key, limit) in enumerate(keys):
            count, ttl = int(results[3 * index + 1]), int(results[3 * index + 2])
            if ttl < 0:  # the key expired between SET and INCR: give the new one its window
                await self.redis.expire(key, self.window_seconds)
                ttl = self.window_seconds
            if count > limit:
                waits.append(max(ttl, 1))
        return max(waits) if waits else None
