"""Login throttling on both Redis servers: the embedded one (Redis 6.2, what ``voluble up`` runs) and the system one."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from app.tenants.throttle import LoginThrottle


def throttle(redis: Redis, window: int = 60) -> LoginThrottle:
    return LoginThrottle(redis, max_per_account=3, max_per_ip=5, window_seconds=window)


def someone() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"user-{tag}@example.com", f"2001:db8::{tag[:4]}:{tag[4:]}"


async def test_failures_per_account_lock_out_until_the_window_ends(redis: Redis) -> None:
    limits, (email, ip) = throttle(redis), someone()
    assert await limits.retry_after(email, ip) is None
    for _ in range(2):
        await limits.failed(email, ip)
    assert await limits.retry_after(email, ip) is None
    await limits.failed(f"  {email.upper()} ", ip)  # the same account, however it is typed
    wait = await limits.retry_after(email, ip)
    assert wait is not None and 50 < wait <= 60
    assert await limits.retry_after(email, "2001:db8::1") == wait  # the account is locked, not the IP
    assert await limits.retry_after(f"other-{email}", ip) is None  # ip: 3 of 5


async def test_the_window_starts_at_the_first_failure_and_is_not_extended(redis: Redis) -> None:
    limits, (email, ip) = throttle(redis, window=60), someone()
    await limits.failed(email, ip)
    key = LoginThrottle._key("acct", email)
    await redis.expire(key, 5)  # as if the first failure was 55 seconds ago
    await limits.failed(email, ip)
    await limits.failed(email, ip)
    assert await redis.get(key) == b"3"
    assert 0 < await redis.ttl(key) <= 5  # later failures keep the first failure's window
    wait = await limits.retry_after(email, ip)
    assert wait is not None and 0 < wait <= 5


async def test_failures_per_ip_and_success_resets_the_account(redis: Redis) -> None:
    limits, (email, ip) = throttle(redis), someone()
    for n in range(5):
        await limits.failed(f"{n}-{email}", ip)
    assert await limits.retry_after(f"new-{email}", ip) is not None  # 5 failures from one IP
    assert await limits.retry_after(f"new-{email}", "2001:db8::2") is None
    other, other_ip = someone()
    for _ in range(2):
        await limits.failed(other, other_ip)
    await limits.succeeded(other)
    await limits.failed(other, other_ip)
    assert await limits.retry_after(other, other_ip) is None  # counted from zero again: 1 of 3
    assert await redis.ttl(LoginThrottle._key("ip", other_ip)) > 0  # every counter expires
