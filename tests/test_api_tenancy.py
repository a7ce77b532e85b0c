"""Cross-tenant matrix: every endpoint of /api/v1 against every kind of principal.

Each case names an endpoint, a target (whose id goes into the path) and the status every principal
must get. Principals: a sysadmin, an org admin (full and narrowed token), a user, API clients with and
without ``users:admin``, the admin, user and client of a suspended organization, no token and a
garbage token. An id of another organization must answer exactly as a random uuid (404).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from app.tenants.models import AccessToken, ApiClient, Organization, Role, TokenKind, User
from tests.conftest import World, bearer

API = "/api/v1"

USERS = ("sysadmin", "admin", "admin_narrow", "user")
CLIENTS = ("client_admin", "client_plain")
SUSPENDED = ("susp_admin", "susp_user", "susp_client")
UNAUTHENTICATED = ("anon", "garbage")
PRINCIPALS = USERS + CLIENTS + SUSPENDED + UNAUTHENTICATED
# principals that hold users:admin in the home organization
HOME_ADMINS = ("admin", "client_admin")


async def oauth_token(
    client: AsyncTestClient[Any], client_id: str, secret: str, scope: str | None = None
) -> str:
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    response = await client.post("/oauth/token", data=data, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@dataclass
class Scene:
    client: AsyncTestClient[Any]
    world: World
    home: Organization
    other: Organization
    suspended: Organization
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    user_of: dict[str, User] = field(default_factory=dict)  # principal -> its user (user principals)
    ids: dict[str, str] = field(default_factory=dict)

    async def fresh_user(self, org: Organization) -> str:
        return str((await self.world.user(org, Role.USER)).id)

    async def fresh_client(self, org: Organization) -> str:
        async with self.world.sessions() as session:
            client_id, _ = await self.world.api_client(org, ["contacts:read"])
            row = await session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
            assert row is not None
            return str(row.id)

    async def fresh_token_of(self, user: User) -> str:
        raw = await self.world.token(user, ["contacts:read"])
        return await self.token_id(raw)

    async def token_id(self, raw: str) -> str:
        from app.tenants.security import hash_secret

        async with self.world.sessions() as session:
            token_id = await session.scalar(
                select(AccessToken.id).where(AccessToken.token_hash == hash_secret(raw))
            )
            assert token_id is not None
            return str(token_id)


@pytest.fixture
async def scene(client: AsyncTestClient[Any], world: World) -> Scene:
    home = await world.org("Home")
    other = await world.org("Other")
    suspended = await world.org("Suspended")
    s = Scene(client=client, world=world, home=home, other=other, suspended=suspended)

    sysadmin = await world.user(None, Role.SYSADMIN)
    admin = await world.user(home, Role.ORG_ADMIN)
    user = await world.user(home, Role.USER)
    s.user_of = {"sysadmin": sysadmin, "admin": admin, "admin_narrow": admin, "user": user}
    tokens = {
        "sysadmin": await world.token(sysadmin),
        "admin": await world.token(admin),
        "admin_narrow": await world.token(admin, ["contacts:read", "messages:send"]),
        "user": await world.token(user),
    }
    cid, secret = await world.api_client(home, ["users:admin", "contacts:read"])
    tokens["client_admin"] = await oauth_token(client, cid, secret)
    cid, secret = await world.api_client(home, ["contacts:read", "messages:send"])
    tokens["client_plain"] = await oauth_token(client, cid, secret)

    susp_admin = await world.user(suspended, Role.ORG_ADMIN)
    susp_user = await world.user(suspended, Role.USER)
    tokens["susp_admin"] = await world.token(susp_admin)
    tokens["susp_user"] = await world.token(susp_user)
    cid, secret = await world.api_client(suspended, ["users:admin", "contacts:read"])
    tokens["susp_client"] = await oauth_token(client, cid, secret)  # issued while still active
    async with world.sessions() as session:
        await session.execute(
            update(Organization).where(Organization.id == suspended.id).values(suspended=True)
        )
        await session.commit()

    s.headers = {name: bearer(tok) for name, tok in tokens.items()}
    s.headers["anon"] = {}
    s.headers["garbage"] = bearer("vol_at_" + uuid.uuid4().hex)

    # standing rows of every kind, in the home, the other and the suspended organization
    sibling = await world.user(home, Role.USER)
    stranger = await world.user(other, Role.ORG_ADMIN)
    s.ids = {
        "random": str(uuid.uuid4()),
        "home_org": str(home.id),
        "other_org": str(other.id),
        "home_user": await s.fresh_user(home),
        "other_user": str(stranger.id),
        "susp_user": str(susp_user.id),
        "sysadmin_user": str(sysadmin.id),
        "home_client": await s.fresh_client(home),
        "other_client": await s.fresh_client(other),
        "sibling_token": await s.fresh_token_of(sibling),
        "other_token": await s.fresh_token_of(stranger),
        "client_token": await s.token_id(tokens["client_admin"]),
    }
    return s


Target = Callable[[Scene, str], Awaitable[str]]


def static(name: str) -> Target:
    async def target(s: Scene, _: str) -> str:
        return s.ids[name]

    target.__name__ = name
    return target


async def new_org(s: Scene, _: str) -> str:
    return str((await s.world.org()).id)


async def new_home_user(s: Scene, _: str) -> str:
    return await s.fresh_user(s.home)


async def new_home_client(s: Scene, _: str) -> str:
    return await s.fresh_client(s.home)


async def new_other_user(s: Scene, _: str) -> str:
    return await s.fresh_user(s.other)


async def new_other_client(s: Scene, _: str) -> str:
    return await s.fresh_client(s.other)


async def own_token(s: Scene, principal: str) -> str:
    """A fresh personal token of the calling user (clients have none: any id will do)."""
    user = s.user_of.get(principal)
    if user is None:
        return s.ids["random"]
    return await s.fresh_token_of(user)


def new_user_body(s: Scene, principal: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": f"new-{uuid.uuid4().hex[:10]}@example.com",
        "name": "New Person",
        "role": "user",
        "password": "a long enough password",
    }
    if principal == "sysadmin":
        body["organization_id"] = str(s.home.id)
    return body


def other_org_user_body(s: Scene, principal: str) -> dict[str, Any]:
    return {**new_user_body(s, principal), "organization_id": str(s.other.id)}


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # may contain {id}
    expect: dict[str, int]  # principal -> status, for the authenticated, non-suspended principals
    target: Target | None = None
    body: Callable[[Scene, str], dict[str, Any]] | None = None


def ok(status: int, allowed: tuple[str, ...], denied: int = 403, **special: int) -> dict[str, int]:
    """``status`` for the allowed principals, ``denied`` for the other active ones, overrides by name."""
    table = {p: (status if p in allowed else denied) for p in USERS + CLIENTS}
    table.update(special)
    return table


ALL_ACTIVE = USERS + CLIENTS
SYSADMIN = ("sysadmin",)
USER_ADMINS = ("sysadmin", *HOME_ADMINS)

CASES = [
    Case("me", "GET", "/me", ok(200, ALL_ACTIVE)),
    # organizations: the sysadmin alone
    Case("orgs-list", "GET", "/organizations", ok(200, SYSADMIN)),
    Case(
        "orgs-create",
        "POST",
        "/organizations",
        ok(201, SYSADMIN),
        body=lambda s, p: {"name": f"Org {uuid.uuid4().hex[:8]}"},
    ),
    Case("org-get-home", "GET", "/organizations/{id}", ok(200, SYSADMIN), static("home_org")),
    Case("org-get-other", "GET", "/organizations/{id}", ok(200, SYSADMIN), static("other_org")),
    Case("org-get-random", "GET", "/organizations/{id}", ok(404, SYSADMIN), static("random")),
    Case(
        "org-patch",
        "PATCH",
        "/organizations/{id}",
        ok(200, SYSADMIN),
        new_org,
        body=lambda s, p: {"credits": 5},
    ),
    Case(
        "org-patch-random",
        "PATCH",
        "/organizations/{id}",
        ok(404, SYSADMIN),
        static("random"),
        body=lambda s, p: {"credits": 5},
    ),
    Case("org-delete", "DELETE", "/organizations/{id}", ok(204, SYSADMIN), new_org),
    Case("org-delete-random", "DELETE", "/organizations/{id}", ok(404, SYSADMIN), static("random")),
    Case(
        "org-credits",
        "POST",
        "/organizations/{id}/credits",
        ok(200, SYSADMIN),
        new_org,
        body=lambda s, p: {"amount": 5},
    ),
    Case(
        "org-credits-random",
        "POST",
        "/organizations/{id}/credits",
        ok(404, SYSADMIN),
        static("random"),
        body=lambda s, p: {"amount": 5},
    ),
    # users: org admins in their own organization, the sysadmin anywhere
    Case("users-list", "GET", "/users", ok(200, USER_ADMINS)),
    # client_admin holds users:admin and contacts:read only, and the body sets a password: a credential
    # never mints an account broader than itself, and a client never sets passwords (issue 7, item 5)
    Case("users-create", "POST", "/users", ok(201, USER_ADMINS, client_admin=403), body=new_user_body),
    Case(
        "users-create-other-org",
        "POST",
        "/users",
        ok(404, USER_ADMINS, sysadmin=201),
        body=other_org_user_body,
    ),
    Case("user-get-home", "GET", "/users/{id}", ok(200, USER_ADMINS), static("home_user")),
    Case("user-get-other", "GET", "/users/{id}", ok(404, USER_ADMINS, sysadmin=200), static("other_user")),
    Case("user-get-suspended", "GET", "/users/{id}", ok(404, USER_ADMINS, sysadmin=200), static("susp_user")),
    Case(
        "user-get-sysadmin", "GET", "/users/{id}", ok(404, USER_ADMINS, sysadmin=200), static("sysadmin_user")
    ),
    Case("user-get-random", "GET", "/users/{id}", ok(404, USER_ADMINS), static("random")),
    Case(
        "user-patch-home",
        "PATCH",
        "/users/{id}",
        ok(200, USER_ADMINS),
        new_home_user,
        body=lambda s, p: {"name": "Renamed"},
    ),
    Case(
        "user-patch-other",
        "PATCH",
        "/users/{id}",
        ok(404, USER_ADMINS, sysadmin=200),
        new_other_user,
        body=lambda s, p: {"name": "Renamed"},
    ),
    Case(
        "user-patch-random",
        "PATCH",
        "/users/{id}",
        ok(404, USER_ADMINS),
        static("random"),
        body=lambda s, p: {"name": "Renamed"},
    ),
    Case("user-delete-home", "DELETE", "/users/{id}", ok(204, USER_ADMINS), new_home_user),
    Case("user-delete-other", "DELETE", "/users/{id}", ok(404, USER_ADMINS, sysadmin=204), new_other_user),
    Case("user-delete-random", "DELETE", "/users/{id}", ok(404, USER_ADMINS), static("random")),
    # API clients: org admins in their own organization, the sysadmin anywhere
    Case("clients-list", "GET", "/clients", ok(200, USER_ADMINS)),
    Case(
        "clients-create",
        "POST",
        "/clients",
        ok(201, USER_ADMINS),
        body=lambda s, p: (
            {"name": "integration", "scopes": ["contacts:read"]}
            | ({"organization_id": str(s.home.id)} if p == "sysadmin" else {})
        ),
    ),
    Case(
        "clients-create-other-org",
        "POST",
        "/clients",
        ok(404, USER_ADMINS, sysadmin=201),
        body=lambda s, p: {
            "name": "integration",
            "scopes": ["contacts:read"],
            "organization_id": str(s.other.id),
        },
    ),
    Case("client-get-home", "GET", "/clients/{id}", ok(200, USER_ADMINS), static("home_client")),
    Case(
        "client-get-other", "GET", "/clients/{id}", ok(404, USER_ADMINS, sysadmin=200), static("other_client")
    ),
    Case("client-get-random", "GET", "/clients/{id}", ok(404, USER_ADMINS), static("random")),
    Case("client-delete-home", "DELETE", "/clients/{id}", ok(204, USER_ADMINS), new_home_client),
    Case(
        "client-delete-other", "DELETE", "/clients/{id}", ok(404, USER_ADMINS, sysadmin=204), new_other_client
    ),
    Case("client-delete-random", "DELETE", "/clients/{id}", ok(404, USER_ADMINS), static("random")),
    # personal tokens: users only, and only their own
    Case("tokens-list", "GET", "/tokens", ok(200, USERS)),
    Case("tokens-create", "POST", "/tokens", ok(201, USERS), body=lambda s, p: {"name": "script"}),
    Case("token-get-own", "GET", "/tokens/{id}", ok(200, USERS), own_token),
    Case("token-get-sibling", "GET", "/tokens/{id}", ok(404, USERS), static("sibling_token")),
    Case("token-get-other-org", "GET", "/tokens/{id}", ok(404, USERS), static("other_token")),
    Case("token-get-client-token", "GET", "/tokens/{id}", ok(404, USERS), static("client_token")),
    Case("token-get-random", "GET", "/tokens/{id}", ok(404, USERS), static("random")),
    Case("token-delete-own", "DELETE", "/tokens/{id}", ok(204, USERS), own_token),
    Case("token-delete-sibling", "DELETE", "/tokens/{id}", ok(404, USERS), static("sibling_token")),
    Case("token-delete-other-org", "DELETE", "/tokens/{id}", ok(404, USERS), static("other_token")),
    Case("token-delete-random", "DELETE", "/tokens/{id}", ok(404, USERS), static("random")),
]

# Every route of the account resources (issue 2) must appear in the matrix; the other resources of
# /api/v1 (contacts, messages, ...) have matrices of their own.
ACCOUNT_RESOURCES = ("/me", "/organizations", "/users", "/clients", "/tokens")
ROUTES = {
    ("GET", "/me"),
    ("GET", "/organizations"),
    ("POST", "/organizations"),
    ("GET", "/organizations/{id}"),
    ("PATCH", "/organizations/{id}"),
    ("DELETE", "/organizations/{id}"),
    ("POST", "/organizations/{id}/credits"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{id}"),
    ("PATCH", "/users/{id}"),
    ("DELETE", "/users/{id}"),
    ("GET", "/clients"),
    ("POST", "/clients"),
    ("GET", "/clients/{id}"),
    ("DELETE", "/clients/{id}"),
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("GET", "/tokens/{id}"),
    ("DELETE", "/tokens/{id}"),
}


def test_matrix_covers_every_route() -> None:
    from app.api.router import make_api_router

    routes = set()
    for route in make_api_router().routes:
        if not route.path.startswith(API):
            continue
        path = route.path[len(API) :]
        if "/" + path.split("/")[1] not in ACCOUNT_RESOURCES:
            continue
        for segment in ("{organization_id:uuid}", "{user_id:uuid}", "{client_id:uuid}", "{token_id:uuid}"):
            path = path.replace(segment, "{id}")
        for method in getattr(route, "methods", set()) - {"OPTIONS", "HEAD"}:
            routes.add((method, path))
    assert routes == ROUTES
    assert {(c.method, c.path) for c in CASES} == ROUTES


MODEL_OF = {"/organizations": Organization, "/users": User, "/clients": ApiClient, "/tokens": AccessToken}


async def _untouched(s: Scene, case: Case, target_id: str) -> bool:
    """After a refused PATCH, POST or DELETE, the row is still there as it was."""
    model = MODEL_OF["/" + case.path.split("/")[1]]
    async with s.world.sessions() as session:
        row = await session.get(model, uuid.UUID(target_id))
        if row is None:
            return target_id == s.ids["random"]
        if case.method in ("PATCH", "POST"):
            return getattr(row, "name", None) != "Renamed" and getattr(row, "credits", 0) != 5
        return getattr(row, "revoked_at", None) is None


async def _call(s: Scene, case: Case, principal: str, target_id: str | None = None) -> tuple[int, Any, str]:
    path = case.path
    if case.target is not None:
        target_id = target_id or await case.target(s, principal)
        path = path.replace("{id}", target_id)
    kwargs: dict[str, Any] = {"headers": s.headers[principal]}
    if case.body is not None:
        kwargs["json"] = case.body(s, principal)
    response = await s.client.request(case.method, API + path, **kwargs)
    body = response.json() if response.content else None
    return response.status_code, body, response.headers.get("content-type", "")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_matrix(scene: Scene, case: Case) -> None:
    expected = {**case.expect, **dict.fromkeys(SUSPENDED, 403), **dict.fromkeys(UNAUTHENTICATED, 401)}
    assert set(expected) == set(PRINCIPALS)
    wrong = []
    for principal in PRINCIPALS:
        target_id = await case.target(scene, principal) if case.target is not None else None
        status, body, content_type = await _call(scene, case, principal, target_id)
        if status != expected[principal]:
            wrong.append(f"{principal}: expected {expected[principal]}, got {status} {body}")
            continue
        if status >= 400 and case.method != "GET" and target_id is not None:
            assert await _untouched(scene, case, target_id), (
                f"{principal} changed {target_id} despite {status}"
            )
        if status >= 400:
            assert content_type.startswith("application/problem+json"), (principal, content_type)
            assert body["status"] == status and body["detail"], (principal, body)
        if status == 404 and case.target is not None:
            # another organization's id answers exactly like a random one
            random_case = Case(case.id, case.method, case.path, case.expect, static("random"), case.body)
            assert await _call(scene, random_case, principal) == (status, body, content_type), principal
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- leaks in lists


async def _count(s: Scene, model: Any, *where: Any) -> int:
    async with s.world.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _list(s: Scene, principal: str, path: str, **params: Any) -> dict[str, Any]:
    response = await s.client.get(API + path, headers=s.headers[principal], params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert body["total"] == len(body["items"])
    return body


@pytest.mark.parametrize("principal", HOME_ADMINS)
async def test_user_and_client_lists_hold_only_the_home_organization(scene: Scene, principal: str) -> None:
    home = str(scene.home.id)
    users = await _list(scene, principal, "/users")
    assert {u["organization_id"] for u in users["items"]} == {home}
    assert users["total"] == await _count(scene, User, User.organization_id == scene.home.id)
    # asking for another organization does not reach it
    users = await _list(scene, principal, "/users", organization_id=str(scene.other.id))
    assert {u["organization_id"] for u in users["items"]} <= {home}
    clients = await _list(scene, principal, "/clients")
    assert {c["organization_id"] for c in clients["items"]} == {home}
    assert clients["total"] == await _count(scene, ApiClient, ApiClient.organization_id == scene.home.id)
    assert scene.ids["other_client"] not in {c["id"] for c in clients["items"]}


async def test_sysadmin_lists_one_organization_on_request(scene: Scene) -> None:
    for org in (scene.home, scene.other):
        users = await _list(scene, "sysadmin", "/users", organization_id=str(org.id))
        assert {u["organization_id"] for u in users["items"]} == {str(org.id)}
        assert users["total"] == await _count(scene, User, User.organization_id == org.id)
        clients = await _list(scene, "sysadmin", "/clients", organization_id=str(org.id))
        assert {c["organization_id"] for c in clients["items"]} == {str(org.id)}
        assert clients["total"] == await _count(scene, ApiClient, ApiClient.organization_id == org.id)
    everyone = await _list(scene, "sysadmin", "/users")
    assert everyone["total"] == await _count(scene, User)
    orgs = await _list(scene, "sysadmin", "/organizations")
    assert orgs["total"] == await _count(scene, Organization)


@pytest.mark.parametrize("principal", USERS)
async def test_token_list_holds_only_my_personal_tokens(scene: Scene, principal: str) -> None:
    me = scene.user_of[principal]
    tokens = await _list(scene, principal, "/tokens")
    ids = {t["id"] for t in tokens["items"]}
    mine = await _count(
        scene, AccessToken, AccessToken.user_id == me.id, AccessToken.kind == TokenKind.PERSONAL
    )
    assert tokens["total"] == mine
    for foreign in ("sibling_token", "other_token", "client_token"):
        assert scene.ids[foreign] not in ids
    for token in tokens["items"]:
        assert "token" not in token and "token_hash" not in token


# ---------------------------------------------------------------- rules beyond the matrix


async def test_me_describes_each_principal(scene: Scene) -> None:
    me = (await scene.client.get(API + "/me", headers=scene.headers["admin_narrow"])).json()
    assert me["kind"] == "user" and me["role"] == "org_admin"
    assert me["organization"]["id"] == str(scene.home.id)
    assert me["scopes"] == ["contacts:read", "messages:send"]
    me = (await scene.client.get(API + "/me", headers=scene.headers["sysadmin"])).json()
    assert me["role"] == "sysadmin" and me["organization"] is None
    me = (await scene.client.get(API + "/me", headers=scene.headers["client_plain"])).json()
    assert me["kind"] == "client" and me["email"] is None
    assert me["scopes"] == ["contacts:read", "messages:send"]
    assert me["organization"]["id"] == str(scene.home.id)


async def test_a_narrow_token_cannot_mint_a_broader_one(scene: Scene) -> None:
    response = await scene.client.post(
        API + "/tokens",
        headers=scene.headers["admin_narrow"],
        json={"name": "wider", "scopes": ["users:admin"]},
    )
    assert response.status_code == 403, response.text
    response = await scene.client.post(
        API + "/tokens", headers=scene.headers["admin_narrow"], json={"name": "same"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == ["contacts:read", "messages:send"]


async def test_a_user_cannot_mint_a_token_beyond_their_role(scene: Scene) -> None:
    for scope in ("users:admin", "servicechains:write"):
        response = await scene.client.post(
            API + "/tokens", headers=scene.headers["user"], json={"name": "x", "scopes": [scope]}
        )
        assert response.status_code == 403, response.text


async def test_a_client_cannot_create_a_client_beyond_its_scopes(scene: Scene) -> None:
    response = await scene.client.post(
        API + "/clients",
        headers=scene.headers["client_admin"],
        json={"name": "x", "scopes": ["messages:send"]},
    )
    assert response.status_code == 403, response.text
    response = await scene.client.post(
        API + "/clients",
        headers=scene.headers["client_admin"],
        json={"name": "x", "scopes": ["contacts:read"]},
    )
    assert response.status_code == 201, response.text


async def test_org_admins_cannot_make_sysadmins(scene: Scene) -> None:
    for principal in HOME_ADMINS:
        body = {**new_user_body(scene, principal), "role": "sysadmin"}
        response = await scene.client.post(API + "/users", headers=scene.headers[principal], json=body)
        assert response.status_code == 403, (principal, response.text)
        response = await scene.client.patch(
            API + f"/users/{scene.ids['home_user']}",
            headers=scene.headers[principal],
            json={"role": "sysadmin"},
        )
        assert response.status_code == 403, (principal, response.text)


async def test_org_admin_cannot_remove_or_demote_themself(scene: Scene) -> None:
    me = scene.user_of["admin"].id
    response = await scene.client.delete(API + f"/users/{me}", headers=scene.headers["admin"])
    assert response.status_code == 403
    response = await scene.client.patch(
        API + f"/users/{me}", headers=scene.headers["admin"], json={"role": "user"}
    )
    assert response.status_code == 403


async def test_deactivated_user_and_revoked_token_are_refused(scene: Scene) -> None:
    response = await scene.client.patch(
        API + f"/users/{scene.user_of['user'].id}", headers=scene.headers["admin"], json={"is_active": False}
    )
    assert response.status_code == 200, response.text
    assert (await scene.client.get(API + "/me", headers=scene.headers["user"])).status_code == 401


async def test_suspension_applies_at_once_and_lifting_it_restores_access(scene: Scene) -> None:
    org = f"/organizations/{scene.home.id}"
    response = await scene.client.patch(
        API + org, headers=scene.headers["sysadmin"], json={"suspended": True}
    )
    assert response.status_code == 200 and response.json()["suspended"] is True
    for principal in ("admin", "user", "client_admin", "client_plain"):
        response = await scene.client.get(API + "/me", headers=scene.headers[principal])
        assert response.status_code == 403, principal
    response = await scene.client.patch(
        API + org, headers=scene.headers["sysadmin"], json={"suspended": False}
    )
    assert response.status_code == 200
    for principal in ("admin", "user", "client_admin", "client_plain"):
        assert (await scene.client.get(API + "/me", headers=scene.headers[principal])).status_code == 200


async def test_deleting_an_organization_removes_its_people_and_credentials(scene: Scene) -> None:
    org = scene.other
    response = await scene.client.delete(API + f"/organizations/{org.id}", headers=scene.headers["sysadmin"])
    assert response.status_code == 204
    assert await _count(scene, User, User.organization_id == org.id) == 0
    assert await _count(scene, ApiClient, ApiClient.organization_id == org.id) == 0
    assert await _count(scene, AccessToken, AccessToken.organization_id == org.id) == 0
    response = await scene.client.get(
        API + f"/users/{scene.ids['other_user']}", headers=scene.headers["sysadmin"]
    )
    assert response.status_code == 404
