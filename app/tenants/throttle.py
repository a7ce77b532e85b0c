"""Login throttling: failures counted per account and per client IP in Redis, shared by all processes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

PREFIX = "voluble:login-fail"


@dataclass
class LoginThrottle:
    redis: Redis
    max_per_account: int
    max_per_ip: int
    window_seconds: int

    @staticmethod
    def _key(kind: str, value: str) -> str:
        digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
        return f"{PREFIX}:{kind}:{digest}"

    async def retry_after(self, email: str, ip: str) -> int | None:
        """Seconds until another try is allowed, or None when the caller may try now."""
        keys = [(self._key("acct", email), self.max_per_account), (self._key("ip", ip), self.max_per_ip)]
        waits: list[int] = []
        for key, limit in keys:
            count = await self.redis.get(key)
            if count is not None and int(count) >= limit:
                ttl = await self.redis.ttl(key)
                waits.append(max(int(ttl), 1))
        return max(waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (self._key("acct", email), self._key("ip", ip)):
                pipe.incr(key)
                pipe.expire(key, self.window_seconds, nx=True)
            await pipe.execute()

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(self._key("acct", email))
