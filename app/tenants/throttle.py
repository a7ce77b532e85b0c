"""Login throttling: failures counted per account and per client IP in Redis, shared by all processes.

Only commands Redis 6.2 has (the embedded server of ``voluble up``): no ``EXPIRE … NX``.
"""

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
        limits = {self._key("acct", email): self.max_per_account, self._key("ip", ip): self.max_per_ip}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in limits:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        waits = [
            max(int(ttl), 1)
            for limit, count, ttl in zip(limits.values(), replies[::2], replies[1::2], strict=True)
            if count is not None and int(count) >= limit
        ]
        return max(waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        """Count a failure; the window starts at the first failure (``SET … EX … NX``, then ``INCR``)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (self._key("acct", email), self._key("ip", ip)):
                pipe.set(key, 0, ex=self.window_seconds, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(self._key("acct", email))
