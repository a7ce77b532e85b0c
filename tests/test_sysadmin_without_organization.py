"""A sysadmin belongs to no organization: what belongs to one answers 403 with problem details on the API,
as on the pages (decision 0018). Where an endpoint takes ``organization_id`` a sysadmin names one instead
(422 without it, tested in test_api_input.py), and the instance-wide resources stay theirs."""

from __future__ import annotations

import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.tenants.models import Role
from tests.conftest import World, bearer

API = "/api/v1"
SOMEONE = str(uuid.uuid4())  # no such row: the organization is refused before any lookup

#: one endpoint (or more) of every area that belongs to an organization
ORGANIZATION_ONLY = [
    ("GET", "/contacts", None),
    ("GET", f"/contacts/{SOMEONE}", None),
    ("GET", "/categories", None),
    ("POST", "/categories", {"name": "VIP"}),
    ("GET", "/servicechains", None),
    ("GET", "/messages", None),
    ("GET", f"/contacts/{SOMEONE}/messages", None),
    ("PUT", "/services/webhook/credentials", {"url": "https://example.com/hook"}),
    ("DELETE", "/services/webhook/credentials", None),
    ("GET", "/organization", None),
    ("PATCH", "/organization", {"default_servicechain_id": None}),
]


async def test_sysadmin_gets_403_for_what_belongs_to_an_organization(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    for method, path, body in ORGANIZATION_ONLY:
        response = await client.request(method, API + path, json=body, headers=sysadmin)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
        problem = response.json()
        assert problem["status"] == 403 and problem["title"] == "Forbidden", (method, path)
        assert "belongs to an organization and sysadmins have none" in problem["detail"], (method, path)

    # the import reads the caller's organization in its handler: the same answer
    files = {"file": ("contacts.csv", b"name,phone\nAda,+447700900123\n", "text/csv")}
    response = await client.post(API + "/contacts/import", files=files, headers=sysadmin)
    assert response.status_code == 403 and "sysadmins have none" in response.json()["detail"]


async def test_sysadmin_keeps_the_instance_wide_resources(client: AsyncTestClient[Litestar], world: World) -> None:
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    for path in ("/services", "/services/log", "/organizations", "/users", "/clients", "/me"):
        response = await client.get(API + path, headers=sysadmin)
        assert response.status_code == 200, (path, response.text)
