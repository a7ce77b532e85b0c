"""The audit log (issue 11 item 4) for the changes the webhooks and blasts brought: a webhook endpoint
created, updated, disabled, its secret rotated, deleted; a blast created and cancelled — each with the
acting user, the organization, the target and the IP, and never a webhook secret."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEntry
from app.config import Settings
from app.tenants.models import Role
from tests.conftest import World, bearer
from tests.pipeline import Tenant, fast_settings, setup_chain
from tests.test_audit import IP
from tests.test_blasts import contacts, ids, post_blast
from tests.webhooks_receiver import Receiver

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


async def of_org(sessions: async_sessionmaker[AsyncSession], org_id: str) -> list[AuditEntry]:
    async with sessions() as session:
        statement = select(AuditEntry).where(AuditEntry.organization_id == uuid.UUID(org_id)).order_by(AuditEntry.at)
        return list(await session.scalars(statement))


async def test_webhook_and_blast_changes_are_audited_without_secrets(
    client: Any, sessions: async_sessionmaker[AsyncSession], world: World, receiver: Receiver
) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    user = await world.user(org, Role.USER)
    t = Tenant(str(org.id), bearer(await world.token(admin)), bearer(await world.token(user)))

    r = await client.post(f"{API}/webhooks", json={"url": receiver.url}, headers=t.admin)
    assert r.status_code == 201, r.text
    hook_id, first_secret = r.json()["id"], r.json()["secret"]
    r = await client.patch(f"{API}/webhooks/{hook_id}", json={"event_types": ["message.received"]}, headers=t.admin)
    assert r.status_code == 200, r.text
    assert (await client.patch(f"{API}/webhooks/{hook_id}", json={"enabled": False}, headers=t.admin)).is_success
    r = await client.post(f"{API}/webhooks/{hook_id}/rotate-secret", headers=t.admin)
    assert r.status_code == 200, r.text
    second_secret = r.json()["secret"]
    assert second_secret != first_secret
    assert (await client.delete(f"{API}/webhooks/{hook_id}", headers=t.admin)).status_code == 204

    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 2)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await post_blast(
        client, t, name="Spring", content="Hi", servicechain_id=chain, contact_ids=ids(people), send_at=at
    )
    assert r.status_code == 201, r.text
    blast_id = r.json()["id"]
    assert (await client.post(f"{API}/blasts/{blast_id}/cancel", headers=t.user)).status_code == 200

    rows = await of_org(sessions, t.org_id)
    found = {(e.action, e.target_id): e for e in rows}
    expected = {
        ("webhook.created", hook_id): admin,
        ("webhook.updated", hook_id): admin,
        ("webhook.disabled", hook_id): admin,
        ("webhook.secret_rotated", hook_id): admin,
        ("webhook.deleted", hook_id): admin,
        ("blast.created", blast_id): user,
        ("blast.cancelled", blast_id): user,
    }
    for (action, target), actor in expected.items():
        entry = found.get((action, target))
        assert entry is not None, (action, sorted(found))
        assert (entry.actor_kind, entry.actor_id, entry.ip) == ("user", actor.id, IP), action
        assert entry.organization_id == org.id
    assert found["webhook.updated", hook_id].summary == "event_types"
    # the secrets were shown to the caller once; the log names the field, never the value
    assert "secret" in found["webhook.secret_rotated", hook_id].summary
    columns = [c.name for c in AuditEntry.__table__.columns if isinstance(c.type, String | Text)]
    for row in rows:
        for column in columns:
            value = str(getattr(row, column) or "")
            assert first_secret not in value and second_secret not in value, (row.action, column)
            assert (
                first_secret.removeprefix("whsec_") not in value and second_secret.removeprefix("whsec_") not in value
            )
