"""Per-service send rates, shared in Redis by every worker process (docs/decisions/0030-send-rate-limits.md).

A service's rate is its plugin's ``PluginInfo.rate_per_second``, lowered for one organization by the
``rate_per_second`` its admin set on the service's credentials: the smaller of both holds, per
(service, organization), across every worker process.

The bucket is GCRA (the generic cell rate algorithm, a token bucket holding one token) with
reservations: one Redis key per (service, organization) holds the moment the next send may go, and one
Lua script (Redis 6.2 commands only: ``TIME``, ``GET``, ``SET … PX``) gives each caller the moment of its
turn and moves it on by ``count / rate`` seconds. Sends are spaced evenly (a rate of 5 is one send every
200 ms: no one-second window ever holds more than 5, give or take the one at its edge), in the order
they asked (first come, first served), and Redis' own clock decides for every process. Nobody busy-waits:
a single send sleeps once, until its turn; a blast send sleeps until its lane's next turn is near.

- :meth:`SendLimiter.turn` reserves a turn and answers its moment; the send job sleeps until a near
  one, and re-schedules itself (holding the turn) to a far one instead of holding a worker;
- :meth:`SendLimiter.reserve` with ``max_wait`` gives a turn only if it comes within ``max_wait``
  seconds (else it reserves nothing);
- :meth:`SendLimiter.blast_turn` is the blast traffic's lane: it books a turn only when it comes within
  :func:`lane_ahead` of now (one process' blast sends take turns one at a time, in order), so a single
  message, which books at once however far, waits behind at most that much blast traffic.

When Redis cannot be reached the send goes ahead unpaced (logged): losing the pace for the length of
an outage is better than losing the messages, and the queues live in that Redis anyway.
"""

from __future__ import annotations

import asyncio
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
#: a job re-scheduled to its turn is scheduled this many whole seconds before it (SAQ schedules by the
#: second and moves due jobs every second), so that it is back, loaded and waiting before its turn
SCHEDULE_AHEAD = 2
#: ... and comes back up to this early, so it waits at least this long in the job rather than re-schedule
SCHEDULE_SLACK = SCHEDULE_AHEAD + 1.0
#: a turn held by a job that comes back this late (seconds; its workers were busy) is taken anew:
#: sending on a long-passed turn would bunch sends together
LATE = 0.5
#: seconds of blast turns booked ahead of now, at least (see :func:`lane_ahead`)
LANE_AHEAD = 0.1

# KEYS[1]: the moment (ms since the epoch, Redis' clock) the next send may go
# ARGV: the interval between sends (ms), count, max_wait (ms; negative: unbounded)
# -> {1, wait_us} reserved; {0, wait_us} not reserved (the turn is further than max_wait)
_RESERVE = """
local interval = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local at = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if at < now then at = now end
local wait = at - now
if max_wait >= 0 and wait > max_wait then
  return {0, math.floor(wait * 1000)}
end
local after = at + count * interval
redis.call('SET', KEYS[1], string.format('%.3f', after), 'PX', math.ceil(after - now) + 1000)
return {1, math.floor(wait * 1000)}
"""


def lane_ahead(rate: float) -> float:
    """How far ahead (seconds) blast traffic books turns: one interval at least, so that the rate is kept
    (the next turn is booked while the previous one is slept for), and :data:`LANE_AHEAD` at high rates,
    so that a Redis round trip never leaves a turn unused. A single message waits behind no more."""
    return max(LANE_AHEAD, 1.0 / max(rate, MIN_RATE))


def lane_width(rate: float | None, max_wait: float, most: int) -> int:
    """How many sends of one batch wait in the lane at once: as many as the rate serves in half of
    ``max_wait`` (one at least, ``most`` at most), so that a batch alone never waits past ``max_wait``
    for its own turns; an unlimited service: ``most``."""
    if rate is None:
        return most
    return max(1, min(most, int(rate * max_wait / 2)))


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
        self._lanes: dict[str, asyncio.Lock] = {}

    @staticmethod
    def interval(rate: float) -> float:
        """Milliseconds between two sends at ``rate`` per second."""
        return 1000.0 / max(rate, MIN_RATE)

    def key(self, service: str, organization_id: UUID) -> str:
        return f"{self.prefix}:send-rate:{service}:{organization_id}"

    async def reserve(self, key: str, rate: float, count: int = 1, max_wait: float | None = None) -> Turn:
        """The turn of ``count`` sends in bucket ``key``: reserved, unless it is further than ``max_wait``
        seconds. Redis unreachable: a turn now (the send goes ahead unpaced, logged)."""
        bound = -1 if max_wait is None else max_wait * 1000
        try:
            reserved, wait_us = await self._script(keys=[key], args=[self.interval(rate), max(count, 1), bound])
        except (RedisError, OSError) as exc:
            log.warning("send rate unavailable; sending unpaced", key=key, error=repr(exc))
            return GO
        return Turn(bool(int(reserved)), int(wait_us) / 1_000_000)

    async def lane(self, key: str, rate: float, until: float) -> Turn:
        """A turn of the lane of blast traffic in bucket ``key``, slept for: booked only once it comes
        within :func:`lane_ahead`, so that single messages (booked at once, however far: :meth:`reserve`)
        go ahead of it. This process' lane waiters ask one at a time, in order (one Redis call per turn,
        not one per waiter), each sleeping until the lane's next turn is near. A turn that cannot be
        booked by ``until`` (epoch seconds) is not waited for: the answer is not ``reserved``, its
        ``wait`` the seconds until the turns booked so far have passed (the caller re-schedules)."""
        ahead = lane_ahead(rate)
        async with self._lanes.setdefault(key, asyncio.Lock()):
            while True:
                turn = await self.reserve(key, rate, 1, max_wait=ahead)
                if turn.reserved:
                    break
                if time.time() + turn.wait - ahead > until:
                    return turn
                await asyncio.sleep(turn.wait - ahead)
        if turn.wait > 0:  # outside the lock: the next waiter books the turn after this one meanwhile
            await asyncio.sleep(turn.wait)
        return turn


class SendLimiter:
    """The send rate of every (service, organization), for the jobs of one worker process.

    Single messages take :meth:`turn`; blast traffic :meth:`blast_turn`, behind them.
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

    async def blast_turn(self, service: str, organization_id: UUID, until: float) -> Turn:
        """A blast send's turn in the lane of blast traffic (:meth:`Pacer.lane`), slept for; an unlimited
        service: :data:`GO`."""
        rate = await self.rate(service, organization_id)
        if rate is None:
            return GO
        return await self.pacer.lane(self.pacer.key(service, organization_id), rate, until)

    async def turn(self, service: str, organization_id: UUID, held: float | None = None) -> float:
        """The moment (epoch seconds) the next send may go: ``held``, a turn reserved earlier, while it
        has not long passed (:data:`LATE`), else a new one, reserved however far it is."""
        if held is not None and held >= time.time() - LATE:
            return held
        return time.time() + (await self.reserve(service, organization_id)).wait
