"""The reads before a plugin call (app/messaging/preparing.py): one statement for any number of attempts,
the credentials of the message's own organization, decrypted once per ciphertext — and new credentials
are the ones the next send uses, through a real worker."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.messaging.models import Attempt
from app.messaging.preparing import CredentialsMemo, prepare, statement
from app.servicehost.models import ServiceCredential
from app.servicehost.registry import PluginRegistry, load_registry
from tests.conftest import World
from tests.pipeline import HookServer, Tenant, fast_settings, new_contact, send, setup_chain, tenant, wait_final


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
async def registry(settings: Settings) -> PluginRegistry:
    registry = load_registry(settings)
    await registry.check()
    return registry


async def hook_credentials(client: AsyncTestClient[Any], t: Tenant, url: str, secret: str) -> None:
    r = await client.put("/api/v1/services/webhook/credentials", json={"url": url, "secret": secret}, headers=t.admin)
    assert r.status_code in (200, 204), r.text


async def pending_attempt(
    client: AsyncTestClient[Any], sessions: Any, t: Tenant, chain: str, contact: str, content: str
) -> uuid.UUID:
    """A message accepted with no worker running: its first attempt stays pending."""
    sent = await send(client, t, contact, chain, content)
    async with sessions() as session:
        return uuid.UUID(str(await session.scalar(select(Attempt.id).where(Attempt.message_id == sent["id"]))))


def signed(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_one_statement_for_any_number_of_attempts_each_with_its_own_organizations_credentials(
    client: AsyncTestClient[Any],
    world: World,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    registry: PluginRegistry,
    hook_server: HookServer,
) -> None:
    a, b = await tenant(world), await tenant(world)
    await hook_credentials(client, a, hook_server.url, "secret-of-org-a-1")
    await hook_credentials(client, b, hook_server.url, "secret-of-org-b-1")
    ids: dict[uuid.UUID, str] = {}
    for t in (a, b):
        chain, contact = await setup_chain(client, t, ["webhook"]), await new_contact(client, t)
        for n in range(3):
            ids[await pending_attempt(client, sessions, t, chain, contact, f"{t.org_id} {n}")] = t.org_id
    memo = CredentialsMemo()
    async with sessions() as session:
        sends, events = await prepare(session, list(ids), settings=settings, registry=registry, memo=memo)
    assert events == {} and {s.attempt_id for s in sends} == set(ids)
    for s in sends:
        org = str(s.outgoing.organization_id)
        assert org == ids[s.attempt_id] and s.outgoing.content.startswith(org)
        assert s.credentials.secret == ("secret-of-org-a-1" if org == a.org_id else "secret-of-org-b-1")
        assert s.address is None and s.outgoing.contact.first_name == "Steve"
    assert len(memo) == 2  # decrypted once per organization, not once per attempt
    assert statement() is statement()  # built once per process

    # an attempt no longer pending is left out; an unknown id is nothing
    first = next(iter(ids))
    async with sessions() as session:
        await session.execute(update(Attempt).where(Attempt.id == first).values(outcome="failed"))
        await session.commit()
        sends, events = await prepare(session, [first, uuid.uuid4()], settings=settings, registry=registry, memo=memo)
    assert sends == [] and events == {}


async def test_unreadable_credentials_fail_the_attempt_not_the_worker(
    client: AsyncTestClient[Any],
    world: World,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    registry: PluginRegistry,
    hook_server: HookServer,
) -> None:
    t = await tenant(world)
    await hook_credentials(client, t, hook_server.url, "secret-of-org-t-1")
    chain, contact = await setup_chain(client, t, ["webhook"]), await new_contact(client, t)
    attempt = await pending_attempt(client, sessions, t, chain, contact, "hello")
    async with sessions() as session:  # a ciphertext no key of this process opens
        await session.execute(
            update(ServiceCredential)
            .where(ServiceCredential.organization_id == uuid.UUID(t.org_id))
            .values(ciphertext="gAAAAAB-not-a-token")
        )
        await session.commit()
        memo = CredentialsMemo()
        sends, events = await prepare(session, [attempt], settings=settings, registry=registry, memo=memo)
    assert sends == [] and events[attempt]["outcome"] == "failed"
    assert events[attempt]["reason"].startswith("credentials unreadable")


def test_the_memo_keeps_the_most_recent() -> None:
    memo, calls = CredentialsMemo(size=2), []
    org = uuid.uuid4()

    def decode(value: str) -> Any:
        return lambda: calls.append(value) or value

    for token in ("t1", "t2", "t1", "t3", "t1", "t2"):
        assert memo.get((org, "webhook", token), decode(token)) == token
    # t1 decoded once (kept: used most recently), t2 again after t3 pushed it out
    assert calls == ["t1", "t2", "t3", "t2"] and len(memo) == 2


@pytest.mark.usefixtures("worker")
async def test_new_credentials_are_the_ones_the_next_send_uses(
    client: AsyncTestClient[Any], world: World, hook_server: HookServer
) -> None:
    t = await tenant(world)
    chain, contact = await setup_chain(client, t, ["webhook"]), await new_contact(client, t)
    for n, secret in enumerate(("first-secret-0001", "second-secret-002")):
        await hook_credentials(client, t, hook_server.url, secret)
        sent = await send(client, t, contact, chain, f"Ping {n}")
        final = await wait_final(client, t, sent["id"])
        assert final["state"] == "MSG_SENT", final
        headers, body = hook_server.requests[n]
        assert f"Ping {n}".encode() in body
        assert hmac.compare_digest(headers["x-voluble-signature"], signed(secret, body)), secret
