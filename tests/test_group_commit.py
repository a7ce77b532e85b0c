"""Group commit of accepted messages and the SQLite writers' turn across processes (decision 0037):
concurrent accepts share transactions and each stays whole; what one request cannot write (a raced
Idempotency-Key, an organization short of credits) is that request's error alone; a writer of another
process holds SQLite's turn until it lets go, and a waiter that gives up leaves nothing held."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import sqlite_lock
from app.db.group_commit import writers
from app.messaging.accepting import WriteSet, write_accepted
from app.messaging.coordinator import Plan
from app.messaging.models import Attempt, AttemptOutcome, CreditState, Direction, Message, MessageState
from app.tenants.models import Organization
from app.tenants.models import Plan as Billing
from tests.conftest import World
from tests.pipeline import Tenant, fast_settings, new_contact, setup_chain, tenant


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def post(client: AsyncTestClient[Any], t: Tenant, body: dict[str, Any], **headers: str) -> Any:
    return await client.post("/api/v1/messages", json=body, headers={**t.user, **headers})


async def test_concurrent_accepts_through_the_api_are_each_whole(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    body = {"contact_id": contact, "servicechain_id": chain, "content": "Hi {{ first_name }}"}
    keyed = {**body, "content": "keyed"}
    answers = await asyncio.gather(
        *(post(client, t, {**body, "content": f"Hi {{{{ first_name }}}} #{i}"}) for i in range(28)),
        post(client, t, keyed, **{"Idempotency-Key": "same"}),
        post(client, t, keyed, **{"Idempotency-Key": "same"}),  # races the one above, in the same batch
    )
    assert [r.status_code for r in answers] == [201] * 30, [r.text for r in answers if r.status_code != 201]
    first, second = answers[28].json(), answers[29].json()
    assert first["id"] == second["id"]
    assert {answers[28].headers.get("idempotent-replayed"), answers[29].headers.get("idempotent-replayed")} == {
        None,
        "true",
    }
    bodies = [r.json() for r in answers[:28]]
    assert sorted(b["content"] for b in bodies) == sorted(f"Hi Steve #{i}" for i in range(28))
    for b in bodies:  # each answer is its own message, as written
        assert b["state"] == MessageState.SENDING.value and b["service"] == "log"
        assert [(a["service"], a["outcome"]) for a in b["attempts"]] == [("log", "pending")]
    async with sessions() as session:
        messages = list(await session.scalars(select(Message).where(Message.organization_id == uuid.UUID(t.org_id))))
        assert len(messages) == 29
        assert {m.id for m in messages} == {uuid.UUID(b["id"]) for b in bodies} | {uuid.UUID(first["id"])}
        assert all(m.state == MessageState.SENDING and m.created_at and m.updated_at for m in messages)
        pending = await session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.organization_id == uuid.UUID(t.org_id), Attempt.outcome == AttemptOutcome.PENDING)
        )
        assert pending == 29
        org = await session.get(Organization, uuid.UUID(t.org_id))
        assert org is not None and org.credits_reserved == 29


def write_set(org: Organization, contact_id: uuid.UUID, chain_id: uuid.UUID, key: str | None = None) -> WriteSet:
    message = Message(
        id=uuid.uuid4(),
        organization_id=org.id,
        contact_id=contact_id,
        servicechain_id=chain_id,
        direction=Direction.OUTGOING,
        state=MessageState.PENDING,
        route=["smtp", "log"],
        content="hi",
        credit=CreditState.RESERVED,
    )
    plan = Plan(skipped=[(0, "smtp", "no_credentials")], service="log", seq=1)
    return WriteSet(message, plan, (key, "digest") if key else None)


async def ready(client: AsyncTestClient[Any], world: World, **org_fields: Any) -> tuple[Organization, Any, Any]:
    t = await tenant(world, **org_fields)
    chain = uuid.UUID(await setup_chain(client, t, ["smtp", "log"]))
    contact = uuid.UUID(await new_contact(client, t))
    async with world.sessions() as session:
        org = await session.get(Organization, uuid.UUID(t.org_id))
    assert org is not None
    return org, contact, chain


async def test_accepts_ready_together_share_a_transaction_and_each_error_stays_its_own(
    client: AsyncTestClient[Any], world: World, engine: Any, sessions: Any
) -> None:
    short = await ready(client, world, plan=Billing.PAY_IN_ADVANCE, credits=3)
    other = await ready(client, world)
    items = [write_set(*short) for _ in range(6)] + [write_set(*other) for _ in range(20)]
    items += [write_set(*other, key="same"), write_set(*other, key="same")]
    before = [(w.transactions, w.written) for w in writers() if w.name == "accept" and w.owner is engine]
    results = await asyncio.gather(*(write_accepted(engine, item) for item in items), return_exceptions=True)
    (writer,) = [w for w in writers() if w.name == "accept" and w.owner is engine]
    transactions, written = writer.transactions - sum(b[0] for b in before), writer.written - sum(b[1] for b in before)
    errors = [type(r).__name__ for r in results if isinstance(r, BaseException)]
    assert sorted(errors) == ["IntegrityError"] + ["PaymentRequired"] * 3, results
    assert (written, transactions) == (24, 24)  # the batch of 28 failed whole, then each on its own
    ok = [i for i, r in zip(items, results, strict=True) if r is None]
    for item in ok:  # each written whole, and answered as written
        assert item.message.state == MessageState.SENDING and item.message.service == "log"
        assert [(a.seq, a.service, a.outcome) for a in item.attempts] == [
            (0, "smtp", AttemptOutcome.FAILED),
            (1, "log", AttemptOutcome.PENDING),
        ]
    async with sessions() as session:
        for org, count in ((short[0], 3), (other[0], 21)):
            assert await session.scalar(select(func.count()).where(Message.organization_id == org.id)) == count
            attempts = await session.scalar(select(func.count()).where(Attempt.organization_id == org.id))
            assert attempts == 2 * count
            fresh = await session.get(Organization, org.id)
            assert fresh is not None and fresh.credits_reserved == count
    # and when nothing spoils it, a batch is one transaction
    again = [write_set(*other) for _ in range(10)]
    start = writer.transactions
    await asyncio.gather(*(write_accepted(engine, item) for item in again))
    assert writer.transactions - start < 10
    assert all(item.message.state == MessageState.SENDING for item in again)


HOLDER = """
import asyncio, sys, time
from app.db import sqlite_lock
async def main():
    async with sqlite_lock.writer(sys.argv[1]):
        print("held", flush=True)
        await asyncio.sleep(float(sys.argv[2]))
asyncio.run(main())
"""


def hold(database: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


async def test_a_writer_of_another_process_holds_the_turn_until_it_lets_go(tmp_path: Path) -> None:
    database = tmp_path / "voluble.db"
    holder = hold(database, 1.5)
    try:
        started = time.monotonic()
        async with sqlite_lock.writer(str(database)):
            waited = time.monotonic() - started
        assert waited > 1.0  # it held the turn for 1.5 s
    finally:
        holder.wait(10)


async def test_a_waiter_that_gives_up_leaves_the_turn_free(tmp_path: Path) -> None:
    database = tmp_path / "voluble.db"
    holder = hold(database, 1.0)
    try:
        waiting = asyncio.create_task(sqlite_lock.writer(str(database)).__aenter__())
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.to_thread(holder.wait, 10)
        # the kernel gave the cancelled waiter the lock once the holder let go: it was given back at once
        second = await asyncio.wait_for(asyncio.to_thread(hold, database, 0.0), 5)
        await asyncio.to_thread(second.wait, 10)
        async with asyncio.timeout(5), sqlite_lock.writer(str(database)):
            pass
    finally:
        holder.kill()
