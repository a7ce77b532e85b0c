"""What is stored: argon2id password hashes, SHA-256 hashes of tokens and secrets, never the raw values."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import argon2
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import PasswordHashSettings
from app.db.base import metadata
from app.tenants.models import AccessToken, ApiClient, PasswordResetToken, Role, User
from app.tenants.services import AccountService, PasswordResetService
from tests.conftest import PASSWORD, World, bearer

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


async def all_stored_text(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, str]]:
    """(table, column, value as text) of every non-null cell of every table."""
    cells: list[tuple[str, str, str]] = []
    async with sessions() as session:
        for table in metadata.sorted_tables:
            rows = (await session.execute(select(table))).mappings().all()
            for row in rows:
                for column, value in row.items():
                    if value is not None:
                        cells.append((table.name, column, str(value)))
    return cells


async def test_passwords_are_argon2id(client: AsyncTestClient[Any], world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    created = await client.post(
        "/api/v1/users",
        headers=bearer(await world.token(admin)),
        json={"email": "new@example.com", "name": "New", "role": "user", "password": "another secret pw"},
    )
    assert created.status_code == 201, created.text
    assert "password" not in created.json() and "password_hash" not in created.json()
    async with world.sessions() as session:
        hashes = list(await session.scalars(select(User.password_hash)))
    assert len(hashes) == 2
    for value in hashes:
        assert value is not None and value.startswith("$argon2id$"), value
        assert PASSWORD not in value and "another secret pw" not in value
    async with world.sessions() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == "new@example.com"))
    assert stored is not None and argon2.PasswordHasher().verify(stored, "another secret pw")


async def test_secrets_and_tokens_are_stored_only_as_sha256(
    client: AsyncTestClient[Any], world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    admin_token = await world.token(admin)

    created = await client.post(
        "/api/v1/clients", headers=bearer(admin_token), json={"name": "crm", "scopes": ["contacts:read"]}
    )
    assert created.status_code == 201, created.text
    client_id, client_secret = created.json()["client_id"], created.json()["client_secret"]
    # the secret is shown once: never again in a read or a listing
    shown = await client.get(f"/api/v1/clients/{created.json()['id']}", headers=bearer(admin_token))
    assert "client_secret" not in shown.json() and "secret_hash" not in shown.json()
    listing = await client.get("/api/v1/clients", headers=bearer(admin_token))
    assert all("client_secret" not in c and "secret_hash" not in c for c in listing.json()["items"])

    issued = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, client_secret)
    )
    assert issued.status_code == 200, issued.text
    access_token = issued.json()["access_token"]

    personal = await client.post("/api/v1/tokens", headers=bearer(admin_token), json={"name": "cli"})
    assert personal.status_code == 201, personal.text
    personal_token = personal.json()["token"]
    again = await client.get(f"/api/v1/tokens/{personal.json()['id']}", headers=bearer(admin_token))
    assert "token" not in again.json() and "token_hash" not in again.json()

    async with sessions() as session:
        reset_token = await PasswordResetService(session=session).issue(admin, 600)
        await session.commit()

    async with sessions() as session:
        for value in await session.scalars(select(ApiClient.secret_hash)):
            assert SHA256_HEX.match(value), value
        for value in await session.scalars(select(AccessToken.token_hash)):
            assert SHA256_HEX.match(value), value
        for value in await session.scalars(select(PasswordResetToken.token_hash)):
            assert SHA256_HEX.match(value), value
        stored = await session.scalar(select(ApiClient.secret_hash).where(ApiClient.client_id == client_id))
        assert stored == hashlib.sha256(client_secret.encode()).hexdigest()

    raw_values = {
        "client secret": client_secret,
        "oauth access token": access_token,
        "personal token (API)": personal_token,
        "personal token (fixture)": admin_token,
        "password reset token": reset_token,
        "password": PASSWORD,
    }
    cells = await all_stored_text(sessions)
    assert cells
    for what, raw in raw_values.items():
        # the random part of each value, without any fixed prefix such as "vol_at_"
        secret_part = re.sub(r"^(vcs|vol_at|vol_pat|vrt)_", "", raw)
        assert len(secret_part) >= 20, raw
        leaks = [(table, column) for table, column, value in cells if secret_part in value]
        assert not leaks, f"{what} stored in {leaks}"


@pytest.mark.parametrize(
    "old_hasher",
    [
        argon2.PasswordHasher(time_cost=1, memory_cost=8192),
        argon2.PasswordHasher(time_cost=1, memory_cost=8192, type=argon2.Type.I),
    ],
    ids=["weak-argon2id", "argon2i"],
)
async def test_old_hash_is_upgraded_on_login(
    world: World, sessions: async_sessionmaker[AsyncSession], old_hasher: argon2.PasswordHasher
) -> None:
    user = await world.user(await world.org(), Role.USER)
    old_hash = old_hasher.hash(PASSWORD)
    async with sessions() as session:
        await session.execute(update(User).where(User.id == user.id).values(password_hash=old_hash))
        await session.commit()

    # a failed login changes nothing
    async with sessions() as session:
        assert await AccountService(session=session).authenticate(user.email, "wrong password!") is None
        await session.commit()
    async with sessions() as session:
        assert await session.scalar(select(User.password_hash).where(User.id == user.id)) == old_hash

    async with sessions() as session:
        assert await AccountService(session=session).authenticate(user.email, PASSWORD) is not None
        await session.commit()
    async with sessions() as session:
        new_hash = await session.scalar(select(User.password_hash).where(User.id == user.id))
    assert new_hash is not None and new_hash != old_hash
    assert new_hash.startswith("$argon2id$")
    # "current" is the configured cost (argon2-cffi's defaults in production, VOLUBLE_PASSWORD_HASH_* here)
    cost = PasswordHashSettings.from_env()
    current = argon2.PasswordHasher(
        time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism, type=argon2.Type.ID
    )
    assert not current.check_needs_rehash(new_hash)
    assert current.verify(new_hash, PASSWORD)

    # and a current hash is left alone on the next login
    async with sessions() as session:
        assert await AccountService(session=session).authenticate(user.email, PASSWORD) is not None
        await session.commit()
    async with sessions() as session:
        assert await session.scalar(select(User.password_hash).where(User.id == user.id)) == new_hash


async def test_login_by_email_is_case_insensitive_and_inactive_users_fail(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await world.user(await world.org(), Role.USER, email="Mixed.Case@Example.com")
    async with sessions() as session:
        stored = await session.scalar(text("SELECT email FROM user_account WHERE email LIKE 'mixed%'"))
        assert stored == "mixed.case@example.com"
        assert (
            await AccountService(session=session).authenticate("MIXED.case@example.COM", PASSWORD) is not None
        )
        await session.execute(update(User).where(User.id == user.id).values(is_active=False))
        await session.commit()
    async with sessions() as session:
        assert await AccountService(session=session).authenticate(user.email, PASSWORD) is None
