"""Per-service send rates, shared in Redis by every worker process (docs/decisions/0030-send-rate-limits.md).

A service's rate is its plugin's ``PluginInfo.rate_per_second``, lowered for one organization by the
``rate_per_second`` its admin set on the service's credentials: the smaller of both holds, per
(service, organization), across every worker process.

The bucket is a sliding-window log with reservations: a sorted set of the moments sends were given,
kept by one Lua script (Redis 6.2 commands only: ``TIME``, ``ZREMRANGEBYSCORE``, ``ZRANGE … WITHSCORES``,
``ZADD``, ``PEXPIRE``). A reservation is given the earliest moment at which it keeps every window of
``window`` seconds at ``limit`` sends or fewer, and never before a reservation given earlier (first
come, first served); the caller sleeps until that moment. Nobody polls: a waiter sleeps once, for as
long as the script said. Redis' own clock decides for every process.

- :meth:`SendLimiter.acquire` waits for its turn, however long, and returns the seconds it waited;
- :meth:`SendLimiter.reserve` with ``max_wait`` gives a turn only if it comes within ``max_wait`` seconds
  (else it reserves nothing and answers None: the send job re-schedules itself instead of waiting).

When Redis cannot be reached the send goes ahead unpaced (logged): losing the pace for the length of
an outage is better than losing the messages, and the queues live in that Redis anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.logging import get_logger
from app.servicehost.models import ServiceCredential
from app.servicehost.registry import PluginRegistry

log = get_logger(__name__)

#: the bounds of the rate an organization may set on a service (sends per second)
MIN_RATE = 0.01
MAX_RATE = 1000.0
#: seconds an organization's rate is remembered by a process before it is read again
OVERRIDE_TTL = 5.0

# KEYS[1]: the sorted set of given moments (ms), KEYS[2]: the counter naming its members
# ARGV: limit, window (ms), count, max_wait (ms; negative: unbounded)
# -> {1, wait_ms} reserved; {0, wait_ms} not reserved (the turn is further than max_wait)
_RESERVE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local at = now
local n = redis.call('ZCARD', KEYS[1])
if n > 0 then
  local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  if last > at then at = last end
  local k = n - (limit - math.min(count, limit))
  if k >= 1 then
    local first = tonumber(redis.call('ZRANGE', KEYS[1], k - 1, k - 1, 'WITHSCORES')[2])
    if first + window > at then at = first + window end
  end
end
local wait = at - now
if max_wait >= 0 and wait > max_wait then
  return {0, wait}
end
local id = redis.call('INCRBY', KEYS[2], count)
for i = 1, count do
  redis.call('ZADD', KEYS[1], at, id - count + i)
end
redis.call('PEXPIRE', KEYS[1], wait + window + 1000)
redis.call('PEXPIRE', KEYS[2], wait + window + 1000)
return {1, wait}
"""


@dataclass(frozen=True)
class Pace:
    """At most ``limit`` sends in any ``window`` seconds: ``rate`` ≥ 1 is ⌊rate⌋ per second, a slower
    rate is one send every 1/rate seconds."""

    limit: int
    window: float

    @classmethod
    def of(cls, rate: float) -> Pace:
        if rate >= 1:
            return cls(int(rate), 1.0)
        return cls(1, 1.0 / max(rate, MIN_RATE))


def effective_rate(default: float | None, override: float | None) -> float | None:
    """The rate that holds: the smaller of the plugin's and the organization's (None: unlimited)."""
    rates = [r for r in (default, override) if r is not None and r > 0]
    return min(rates) if rates else None


@dataclass(frozen=True)
class Turn:
    """When sends may go: ``wait`` seconds from now; ``reserved`` False when that was further than the
    caller's ``max_wait`` and nothing was reserved."""

    reserved: bool
    wait: float


#: go at once (an unlimited service, or Redis unreachable)
GO = Turn(True, 0.0)


class Pacer:
    """The Redis side: reservations in one bucket per key, for any rate."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_RESERVE)

    def key(self, service: str, organization_id: UUID) -> str:
        return f"{self.prefix}:send-rate:{service}:{organization_id}"

    async def reserve(self, key: str, rate: float, count: int = 1, max_wait: float | None = None) -> Turn:
        """The turn of ``count`` sends in bucket ``key``: reserved, unless it is further than ``max_wait``
        seconds. Redis unreachable: a turn now (the send goes ahead unpaced, logged)."""
        pace = Pace.of(rate)
        bound = -1 if max_wait is None else int(max_wait * 1000)
        try:
            reserved, wait_ms = await self._script(
                keys=[key, key + ":seq"], args=[pace.limit, int(pace.window * 1000), max(count, 1), bound]
            )
        except (RedisError, OSError) as exc:
            log.warning("send rate unavailable; sending unpaced", key=key, error=repr(exc))
            return GO
        return Turn(bool(int(reserved)), int(wait_ms) / 1000)


class SendLimiter:
    """The send rate of every (service, organization), for the jobs of one worker process.

    ``await limiter.acquire(service, organization_id, count)`` waits until ``count`` sends may go.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        registry: PluginRegistry,
        sessions: async_sessionmaker[AsyncSession],
        override_ttl: float = OVERRIDE_TTL,
    ) -> None:
        self.pacer = Pacer(redis, prefix)
        self.registry = registry
        self.sessions = sessions
        self.override_ttl = override_ttl
        self._overrides: dict[tuple[str, UUID], tuple[float, float | None]] = {}

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, registry: PluginRegistry, sessions: async_sessionmaker[AsyncSession]
    ) -> SendLimiter:
        return cls(Redis.from_url(url), prefix=prefix, registry=registry, sessions=sessions)

    async def close(self) -> None:
        await self.pacer.redis.aclose()

    async def _override(self, service: str, organization_id: UUID) -> float | None:
        now = time.monotonic()
        cached = self._overrides.get((service, organization_id))
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.sessions() as session:
            rate = await session.scalar(
                select(ServiceCredential.rate_per_second).where(
                    ServiceCredential.organization_id == organization_id, ServiceCredential.service == service
                )
            )
        self._overrides[(service, organization_id)] = (now + self.override_ttl, rate)
        return rate

    async def rate(self, service: str, organization_id: UUID) -> float | None:
        """The sends per second that hold for ``service`` and the organization (None: unlimited)."""
        entry = self.registry.entry(service)
        default = entry.info.rate_per_second if entry is not None and entry.info is not None else None
        return effective_rate(default, await self._override(service, organization_id))

    async def reserve(
        self, service: str, organization_id: UUID, count: int = 1, *, max_wait: float | None = None
    ) -> Turn:
        """The turn of ``count`` sends (an unlimited service: :data:`GO`); not reserved when it is
        further than ``max_wait`` seconds."""
        rate = await self.rate(service, organization_id)
        if rate is None:
            return GO
        return await self.pacer.reserve(self.pacer.key(service, organization_id), rate, count, max_wait)

    async def acquire(self, service: str, organization_id: UUID, count: int = 1) -> float:
        """Wait (sleeping, once) until ``count`` sends of ``service`` for the organization may go;
        the seconds waited. Keep ``count`` at most :meth:`burst`: more than that in one go exceeds the
        rate by construction (the bucket then makes the next sends wait for the whole window)."""
        turn = await self.reserve(service, organization_id, count)
        if turn.wait > 0:
            await asyncio.sleep(turn.wait)
        return turn.wait

    async def burst(self, service: str, organization_id: UUID) -> int | None:
        """How many sends may go at once within the rate (None: unlimited)."""
        rate = await self.rate(service, organization_id)
        return None if rate is None else Pace.of(rate).limit


def deferral(turn: Turn, max_wait: float) -> int:
    """Seconds to re-schedule a job by whose turn was further than ``max_wait``: it comes back when its
    turn is about ``max_wait`` away (whole seconds: SAQ schedules by the second)."""
    return max(math.ceil(turn.wait - max_wait), 1)
