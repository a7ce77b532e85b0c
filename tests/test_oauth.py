"""POST /oauth/token (RFC 6749 §4.4, client_credentials) and the life of the tokens it issues."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.config import Settings
from app.tenants.models import AccessToken, ApiClient, Organization, Role, TokenKind
from app.tenants.security import hash_secret
from tests.conftest import World, bearer

SCOPES = ["contacts:read", "messages:read", "messages:send"]
TOKEN_KEYS = {"access_token", "token_type", "expires_in", "scope"}


async def token_request(
    client: AsyncTestClient[Any],
    client_id: str,
    secret: str,
    *,
    how: str = "basic",
    **form: str,
) -> Any:
    data = {"grant_type": "client_credentials", **form}
    if how == "basic":
        return await client.post("/oauth/token", data=data, auth=(client_id, secret))
    return await client.post("/oauth/token", data={**data, "client_id": client_id, "client_secret": secret})


async def me(client: AsyncTestClient[Any], token: str) -> Any:
    return await client.get("/api/v1/me", headers=bearer(token))


async def client_row(world: World, client_id: str) -> ApiClient:
    async with world.sessions() as session:
        row = await session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
        assert row is not None
        return row


def assert_oauth_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    assert response.headers.get("cache-control") == "no-store"


@pytest.mark.parametrize("how", ["basic", "post"])
async def test_valid_client_gets_a_working_bearer_token(
    client: AsyncTestClient[Any], world: World, settings: Settings, how: str
) -> None:
    org = await world.org()
    client_id, secret = await world.api_client(org, SCOPES)
    before = datetime.now(UTC)
    response = await token_request(client, client_id, secret, how=how)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.security.access_token_ttl_seconds
    assert isinstance(body["scope"], str) and sorted(body["scope"].split(" ")) == SCOPES
    assert len(body["access_token"]) >= 32

    caller = await me(client, body["access_token"])
    assert caller.status_code == 200, caller.text
    data = caller.json()
    assert data["kind"] == "client"
    assert data["scopes"] == SCOPES  # a list in the API, unlike the token response
    assert data["organization"]["id"] == str(org.id)
    assert data["role"] == "user"

    async with world.sessions() as session:
        row = await session.scalar(
            select(AccessToken).where(AccessToken.token_hash == hash_secret(body["access_token"]))
        )
        assert row is not None and row.kind == TokenKind.OAUTH and row.organization_id == org.id
        assert row.expires_at is not None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        ttl = timedelta(seconds=settings.security.access_token_ttl_seconds)
        assert (
            before + ttl - timedelta(seconds=5) <= expires <= datetime.now(UTC) + ttl + timedelta(seconds=5)
        )


async def test_each_request_issues_a_distinct_token(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    first = (await token_request(client, client_id, secret)).json()["access_token"]
    second = (await token_request(client, client_id, secret)).json()["access_token"]
    assert first != second
    assert (await me(client, first)).status_code == 200
    assert (await me(client, second)).status_code == 200


@pytest.mark.parametrize("how", ["basic", "post"])
async def test_narrower_scope_is_honoured(client: AsyncTestClient[Any], world: World, how: str) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await token_request(client, client_id, secret, how=how, scope="messages:send contacts:read")
    assert response.status_code == 200, response.text
    assert sorted(response.json()["scope"].split(" ")) == ["contacts:read", "messages:send"]
    assert (await me(client, response.json()["access_token"])).json()["scopes"] == [
        "contacts:read",
        "messages:send",
    ]


async def test_scope_the_client_does_not_hold_is_dropped(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await token_request(client, client_id, secret, scope="contacts:read users:admin")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "contacts:read"
    assert (await me(client, response.json()["access_token"])).json()["scopes"] == ["contacts:read"]
    # the token it got cannot reach what users:admin would open
    listing = await client.get("/api/v1/users", headers=bearer(response.json()["access_token"]))
    assert listing.status_code == 403


async def test_only_scopes_the_client_does_not_hold_is_invalid_scope(
    client: AsyncTestClient[Any], world: World
) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    assert_oauth_error(
        await token_request(client, client_id, secret, scope="users:admin"), 400, "invalid_scope"
    )


async def test_unknown_scope_is_invalid_scope(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await token_request(client, client_id, secret, scope="contacts:read everything:everywhere")
    assert_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize("how", ["basic", "post"])
async def test_wrong_secret_is_invalid_client(client: AsyncTestClient[Any], world: World, how: str) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await token_request(client, client_id, secret[:-2] + "xx", how=how)
    assert_oauth_error(response, 401, "invalid_client")
    if how == "basic":
        assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("how", ["basic", "post"])
async def test_unknown_client_is_invalid_client(client: AsyncTestClient[Any], world: World, how: str) -> None:
    response = await token_request(client, "vcl_doesnotexist", "vcs_whatever", how=how)
    assert_oauth_error(response, 401, "invalid_client")


async def test_another_clients_secret_is_invalid_client(client: AsyncTestClient[Any], world: World) -> None:
    org = await world.org()
    client_id, _ = await world.api_client(org, SCOPES)
    _, other_secret = await world.api_client(await world.org(), SCOPES)
    assert_oauth_error(await token_request(client, client_id, other_secret), 401, "invalid_client")


async def test_no_client_authentication_is_invalid_client(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert_oauth_error(response, 401, "invalid_client")
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!notbase64"},
    )
    assert_oauth_error(response, 401, "invalid_client")
    only_id = base64.b64encode(b"vcl_abc").decode()
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {only_id}"},
    )
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("how", ["basic", "post"])
async def test_revoked_client_is_refused_and_its_tokens_die(
    client: AsyncTestClient[Any], world: World, how: str
) -> None:
    org = await world.org()
    admin_token = await world.token(await world.user(org, Role.ORG_ADMIN))
    client_id, secret = await world.api_client(org, SCOPES)
    issued = (await token_request(client, client_id, secret)).json()["access_token"]
    assert (await me(client, issued)).status_code == 200

    row = await client_row(world, client_id)
    response = await client.delete(f"/api/v1/clients/{row.id}", headers=bearer(admin_token))
    assert response.status_code == 204, response.text

    assert_oauth_error(await token_request(client, client_id, secret, how=how), 401, "invalid_client")
    refused = await me(client, issued)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    shown = await client.get(f"/api/v1/clients/{row.id}", headers=bearer(admin_token))
    assert shown.json()["revoked"] is True


async def test_password_grant_is_unsupported(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "a@example.com", "password": "x" * 12},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")
    for grant in ("authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        response = await client.post("/oauth/token", data={"grant_type": grant}, auth=(client_id, secret))
        assert_oauth_error(response, 400, "unsupported_grant_type")


async def test_missing_grant_type_is_invalid_request(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await client.post("/oauth/token", data={"scope": "contacts:read"}, auth=(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request")
    response = await client.post(
        "/oauth/token",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_json_and_other_bodies_are_invalid_request(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await client.post(
        "/oauth/token", json={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert_oauth_error(response, 400, "invalid_request")
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={"Content-Type": "text/plain"},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "invalid_request")
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&\xff\xfe=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_repeated_parameters_are_invalid_request(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&scope=contacts:read&scope=users:admin",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_token_endpoint_only_accepts_post(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/oauth/token")
    assert response.status_code == 405


async def test_expired_token_is_refused(client: AsyncTestClient[Any], world: World) -> None:
    client_id, secret = await world.api_client(await world.org(), SCOPES)
    issued = (await token_request(client, client_id, secret)).json()["access_token"]
    user_token = await world.token(await world.user(await world.org(), Role.USER))
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with world.sessions() as session:
        for raw in (issued, user_token):
            await session.execute(
                update(AccessToken).where(AccessToken.token_hash == hash_secret(raw)).values(expires_at=past)
            )
        await session.commit()
    for raw in (issued, user_token):
        response = await me(client, raw)
        assert response.status_code == 401, response.text
        assert "invalid_token" in response.headers["www-authenticate"]


async def test_revoked_personal_token_is_refused(client: AsyncTestClient[Any], world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    keep = await world.token(user)
    doomed = await world.token(user)
    listing = await client.get("/api/v1/tokens", headers=bearer(keep))
    doomed_id = next(t["id"] for t in listing.json()["items"] if doomed.startswith(t["prefix"]))
    assert (await me(client, doomed)).status_code == 200
    response = await client.delete(f"/api/v1/tokens/{doomed_id}", headers=bearer(keep))
    assert response.status_code == 204
    assert (await me(client, doomed)).status_code == 401
    assert (await me(client, keep)).status_code == 200
    # revoking twice is harmless; the token stays revoked
    assert (await client.delete(f"/api/v1/tokens/{doomed_id}", headers=bearer(keep))).status_code == 204
    shown = await client.get(f"/api/v1/tokens/{doomed_id}", headers=bearer(keep))
    assert shown.json()["revoked"] is True


async def test_a_token_revoking_itself_ends_its_own_access(
    client: AsyncTestClient[Any], world: World
) -> None:
    user = await world.user(await world.org(), Role.USER)
    raw = await world.token(user)
    listing = await client.get("/api/v1/tokens", headers=bearer(raw))
    own_id = listing.json()["items"][0]["id"]
    assert (await client.delete(f"/api/v1/tokens/{own_id}", headers=bearer(raw))).status_code == 204
    assert (await me(client, raw)).status_code == 401


async def test_suspended_organizations_client_is_refused(client: AsyncTestClient[Any], world: World) -> None:
    org = await world.org()
    client_id, secret = await world.api_client(org, SCOPES)
    issued = (await token_request(client, client_id, secret)).json()["access_token"]
    async with world.sessions() as session:
        await session.execute(update(Organization).where(Organization.id == org.id).values(suspended=True))
        await session.commit()
    for how in ("basic", "post"):
        assert_oauth_error(await token_request(client, client_id, secret, how=how), 401, "invalid_client")
    assert (await me(client, issued)).status_code == 403
    async with world.sessions() as session:
        await session.execute(update(Organization).where(Organization.id == org.id).values(suspended=False))
        await session.commit()
    assert (await token_request(client, client_id, secret)).status_code == 200
    assert (await me(client, issued)).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Basic abc", "bearer-token", "Token abc", "Bearer vol_at_" + "A" * 43],
)
async def test_malformed_or_unknown_bearer_is_401(client: AsyncTestClient[Any], header: str) -> None:
    response = await client.get("/api/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
