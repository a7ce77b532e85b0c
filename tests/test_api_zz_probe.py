from __future__ import annotations
from typing import Any
from litestar.testing import AsyncTestClient
from app.tenants.models import Role
from tests.conftest import World, bearer

async def test_probe(client: AsyncTestClient[Any], world: World, db_backend: str) -> None:
    if db_backend != "sqlite":
        return
    org = await world.org("Taken")
    admin = await world.user(org, Role.ORG_ADMIN)
    sys = await world.user(None, Role.SYSADMIN)
    h = bearer(await world.token(admin)); hs = bearer(await world.token(sys))
    reqs = [
        ("POST", "/api/v1/users", dict(content=b'{"email":"a@b.co","name":"x"}', headers={"content-type": "application/x-www-form-urlencoded"})),
        ("POST", "/api/v1/users", dict(content=b'\xff\xfe', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'{"email":"a@b.co","name":"x\u0000"}', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'null', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'x'*(1<<20)+b'xx', headers={"content-type": "application/json"})),
        ("PATCH", "/api/v1/users/" + "a"*2000, dict(json={})),
        ("DELETE", "/api/v1/tokens/00000000-0000-0000-0000-00000000000g", {}),
        ("GET", "/api/v1/users/%00", {}),
        ("GET", "/api/v1/organizations/ffffffff-ffff-ffff-ffff-ffffffffffff", dict(headers=hs)),
        ("GET", "/api/v1/organizations/" + "6E6B364C475C411089E2BA97A4EFF067", dict(headers=hs)),
        ("GET", "/api/v1/users?limit=99999999999999999999999", {}),
        ("GET", "/api/v1/users?offset=99999999999999999999999", {}),
        ("GET", "/api/v1/users?offset=9223372036854775807", {}),
        ("GET", "/api/v1/users?limit=1&limit=2", {}),
        ("POST", "/api/v1/organizations/{}/credits".format(org.id), dict(json={"amount": 2**70}, headers=hs)),
        ("POST", "/api/v1/organizations", dict(json={"name": "x", "credits": 2**70}, headers=hs)),
        ("POST", "/api/v1/users", dict(json={"email": "a\u0000@b.co", "name": "x"})),
        ("POST", "/api/v1/users", dict(json={"email": "new@b.co", "name": "x\u0000y"})),
        ("POST", "/api/v1/users", dict(json={"email": "a@b.co", "name": "x", "password": "short"})),
        ("POST", "/api/v1/users", dict(json={"email": "nope", "name": "x"})),
        ("POST", "/api/v1/users", dict(json={"email": 5, "name": "x"})),
        ("POST", "/api/v1/users", dict(json={"email": "a@b.co", "name": "x", "zzz": 1})),
        ("POST", "/api/v1/users", dict(content=b'{"email": ', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'[]', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'', headers={"content-type": "application/json"})),
        ("POST", "/api/v1/users", dict(content=b'{"email":"a@b.co","name":"x"}', headers={"content-type": "text/plain"})),
        ("POST", "/api/v1/users", dict(json={"email": "a@b.co", "name": "x" * (1 << 20)})),
        ("POST", "/api/v1/clients", dict(json={"name": "x", "scopes": ["nope"]})),
        ("POST", "/api/v1/tokens", dict(json={"name": "x", "scopes": ["nope"]})),
        ("GET", "/api/v1/users/not-a-uuid", {}),
        ("GET", "/api/v1/users/123", {}),
        ("GET", "/api/v1/users?limit=0", {}),
        ("GET", "/api/v1/users?limit=501", {}),
        ("GET", "/api/v1/users?offset=-1", {}),
        ("GET", "/api/v1/users?limit=abc", {}),
        ("GET", "/api/v1/users?organization_id=zz", {}),
        ("POST", "/api/v1/organizations", dict(json={"name": "Taken"}, headers=hs)),
        ("POST", "/api/v1/organizations", dict(json={"name": " Taken "}, headers=hs)),
        ("PATCH", f"/api/v1/organizations/{org.id}", dict(json={"name": "Taken"}, headers=hs)),
        ("POST", "/api/v1/organizations", dict(json={"name": "Other"}, headers=hs)),
        ("PATCH", f"/api/v1/organizations/{org.id}", dict(json={"name": "Other"}, headers=hs)),
        ("PATCH", f"/api/v1/organizations/{org.id}", dict(json={"name": "  "}, headers=hs)),
        ("PATCH", f"/api/v1/organizations/{org.id}", dict(json={"plan": "FREE"}, headers=hs)),
        ("POST", "/api/v1/users", dict(json={"email": admin.email.upper(), "name": "x"})),
        ("PATCH", f"/api/v1/users/{admin.id}", dict(json={"email": sys.email})),
        ("POST", "/api/v1/users", dict(json={"email": "a@b.co", "name": "x", "role": "king"})),
        ("POST", "/api/v1/tokens", dict(json={"name": "x", "expires_in_days": 0})),
        ("POST", "/api/v1/tokens", dict(json={"name": "   "})),
    ]
    for method, url, kw in reqs:
        kw["headers"] = {**h, **kw.get("headers", {})}
        r = await client.request(method, url, **kw)
        print(method, url[:60], str(kw.get("json", kw.get("content", "")))[:60], "->", r.status_code, r.headers.get("content-type"), r.text[:300])
