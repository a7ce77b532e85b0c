"""``voluble credentials rotate-key``: credentials saved under key A stay readable while the processes run with
"B,A", are re-encrypted under B by the command (in batches, idempotently, counted), and then need only B."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.plugins.crypto import CredentialCipher, CredentialsUnavailable
from app.servicehost.models import ServiceCredential
from app.servicehost.registry import load_registry
from app.servicehost.services import CredentialService
from tests.conftest import World
from tests.helpers import worker_env

KEY_A = Fernet.generate_key().decode()
KEY_B = "the passphrase of key B"  # a passphrase is stretched into a key
KEY_C = Fernet.generate_key().decode()  # a key none of the processes knows


def smtp(n: int) -> dict[str, Any]:
    return {"host": f"mail{n}.example.com", "port": 587, "security": "starttls", "from_address": f"n{n}@example.com"}


def keyed(settings: Settings, *keys: str) -> Settings:
    return dataclasses.replace(settings, security=dataclasses.replace(settings.security, credentials_keys=keys))


async def save(sessions: async_sessionmaker[AsyncSession], settings: Settings, org_id: uuid.UUID, n: int) -> None:
    """What saving credentials writes: the organization's smtp row, encrypted under the settings' first key."""
    token = CredentialCipher(settings.security).encrypt(org_id, "smtp", smtp(n))
    async with sessions() as session:
        session.add(ServiceCredential(organization_id=org_id, service="smtp", ciphertext=token))
        await session.commit()


async def read(sessions: async_sessionmaker[AsyncSession], settings: Settings, org_id: uuid.UUID) -> Any:
    """The organization's smtp credentials as a send would get them."""
    registry = load_registry(settings)
    await registry.ensure_checked()
    async with sessions() as session:
        service = CredentialService(session=session, organization_id=org_id, settings=settings, registry=registry)
        return await service.get_decrypted("smtp")


async def ciphertexts(sessions: async_sessionmaker[AsyncSession]) -> dict[uuid.UUID, str]:
    async with sessions() as session:
        rows = (await session.execute(select(ServiceCredential.organization_id, ServiceCredential.ciphertext))).all()
    return {org_id: text for org_id, text in rows}


@dataclasses.dataclass
class Run:
    returncode: int
    said: str  # stderr, on one line (the CLI draws errors in a box, wrapped)


def rotate_key(settings: Settings, keys: str, *args: str) -> Run:
    env = worker_env(settings, VOLUBLE_CREDENTIALS_KEY=keys)
    command = [sys.executable, "-m", "app", "credentials", "rotate-key", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    return Run(done.returncode, " ".join(re.sub(r"[│╭╮╰╯─]", " ", done.stderr).split()))


async def test_rotation_without_downtime(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    under_a, both, under_b = keyed(settings, KEY_A), keyed(settings, KEY_B, KEY_A), keyed(settings, KEY_B)
    orgs = [(await world.org()).id for _ in range(6)]
    for n, org_id in enumerate(orgs[:4]):
        await save(sessions, under_a, org_id, n)
    await save(sessions, keyed(settings), orgs[4], 4)  # before any credentials key: the secret-derived key
    await save(sessions, keyed(settings, KEY_C), orgs[5], 5)  # a key nobody has any more
    readable = orgs[:5]

    # the processes restarted with "B,A": everything still reads, new saves go under B
    for n, org_id in enumerate(readable):
        assert (await read(sessions, both, org_id)).host == f"mail{n}.example.com"
    assert CredentialCipher(under_b.security).is_current(CredentialCipher(both.security).encrypt(orgs[0], "x", {}))
    with pytest.raises(CredentialsUnavailable, match="cannot be decrypted"):
        await read(sessions, both, orgs[5])

    # a dry run counts and writes nothing
    before = await ciphertexts(sessions)
    dry = rotate_key(settings, f"{KEY_B},{KEY_A}", "--dry-run", "--batch-size", "2")
    assert dry.returncode == 1, dry.said
    assert "6 credentials: 5 would be re-encrypted, 0 already under the newest key" in dry.said
    assert await ciphertexts(sessions) == before

    # the rotation, in batches of 2: five rows re-encrypted, the unreadable one reported (not a crash)
    done = rotate_key(settings, f" {KEY_B} , {KEY_A} ", "--batch-size", "2")
    assert done.returncode == 1 and "Traceback" not in done.said, done.said
    assert "6 credentials: 5 re-encrypted, 0 already under the newest key, 0 saved again meanwhile, 1 unreadable" in (
        done.said
    )
    assert f"organization {orgs[5]}, service smtp" in done.said and "add the key they were saved under" in done.said
    after = await ciphertexts(sessions)
    assert all(after[o] != before[o] for o in readable) and after[orgs[5]] == before[orgs[5]]

    # the organization whose credentials were lost saves them again; a second run changes nothing
    async with sessions() as session:
        row = await session.scalar(select(ServiceCredential).where(ServiceCredential.organization_id == orgs[5]))
        assert row is not None
        row.ciphertext = CredentialCipher(both.security).encrypt(orgs[5], "smtp", smtp(5))
        await session.commit()
    again = rotate_key(settings, f"{KEY_B},{KEY_A}", "--batch-size", "4")
    assert again.returncode == 0, again.said
    assert "6 credentials: 0 re-encrypted, 6 already under the newest key" in again.said
    assert "the older keys can now be dropped" in again.said
    assert {o: t for o, t in (await ciphertexts(sessions)).items() if o != orgs[5]} == {
        o: t for o, t in after.items() if o != orgs[5]
    }

    # key A dropped: everything reads with B alone, with the contents and bindings it had
    for n, org_id in enumerate(orgs):
        assert (await read(sessions, under_b, org_id)).from_address == f"n{n}@example.com"
    # and with A alone nothing does: a clear error for the send, and for the command
    for org_id in orgs:
        with pytest.raises(CredentialsUnavailable, match="has the key changed"):
            await read(sessions, under_a, org_id)
    stale = rotate_key(settings, KEY_A)
    assert stale.returncode == 1 and "Traceback" not in stale.said
    assert "6 unreadable" in stale.said and "cannot be decrypted with any configured key" in stale.said


def test_the_key_list_is_newest_first(settings: Settings) -> None:
    token = CredentialCipher(keyed(settings, KEY_A).security).encrypt(uuid.uuid4(), "smtp", {})
    assert not CredentialCipher(keyed(settings, KEY_B, KEY_A).security).is_current(token)
    assert CredentialCipher(keyed(settings, KEY_A, KEY_B).security).is_current(token)
    rotated = CredentialCipher(keyed(settings, KEY_B, KEY_A).security).rotate(token)
    assert CredentialCipher(keyed(settings, KEY_B).security).is_current(rotated)
    with pytest.raises(CredentialsUnavailable):
        CredentialCipher(keyed(settings, KEY_C).security).rotate(token)


def test_the_command_needs_a_key(settings: Settings, engine: Any) -> None:
    done = rotate_key(settings, "")
    assert done.returncode != 0 and "VOLUBLE_CREDENTIALS_KEY is not set" in done.said


def test_keys_come_from_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("VOLUBLE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("VOLUBLE_CREDENTIALS_KEY", f" {KEY_B}, {KEY_A} ,,")
    assert Settings.from_env().security.credentials_keys == (KEY_B, KEY_A)
    monkeypatch.setenv("VOLUBLE_CREDENTIALS_KEY", "")
    assert Settings.from_env().security.credentials_keys == ()
