"""Contacts and categories over /api/v1: CRUD, normalisation, search, tenancy, scopes, hostile input."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from advanced_alchemy.exceptions import NotFoundError
from litestar.testing import AsyncTestClient

from app.contacts import fields
from app.contacts.services import ContactService
from app.tenants.models import Organization, Role
from tests.conftest import World, bearer

API = "/api/v1"
PHONE = "+44 20 7946 0958"
PHONE_E164 = "+442079460958"


@dataclass
class Org:
    org: Organization
    headers: dict[str, str]


@dataclass
class Scene:
    client: AsyncTestClient[Any]
    world: World
    home: Org
    other: Org

    async def post(self, path: str, body: Any, org: Org | None = None) -> Any:
        return await self.client.post(API + path, json=body, headers=(org or self.home).headers)

    async def contact(self, org: Org | None = None, **body: Any) -> dict[str, Any]:
        response = await self.post("/contacts", {"first_name": "Ada", **body}, org)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def chain(self, org: Org) -> str:
        """A servicechain of ``org`` (made by one of its org admins: users cannot write chains)."""
        admin = await self.world.user(org.org, Role.ORG_ADMIN)
        response = await self.client.post(
            f"{API}/servicechains",
            json={"name": f"chain {uuid.uuid4().hex[:6]}", "services": ["log"]},
            headers=bearer(await self.world.token(admin)),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def category(self, name: str, org: Org | None = None) -> dict[str, Any]:
        response = await self.post("/categories", {"name": name}, org)
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def scene(client: AsyncTestClient[Any], world: World) -> Scene:
    orgs = []
    for name in ("Home", "Other"):
        org = await world.org(name)
        user = await world.user(org, Role.USER)
        orgs.append(Org(org, bearer(await world.token(user))))
    return Scene(client, world, orgs[0], orgs[1])


def field_errors(response: Any) -> dict[str, str]:
    body = response.json()
    return {e["field"]: e["message"] for e in body.get("errors", [])}


# ---------------------------------------------------------------- CRUD


async def test_contact_crud_and_fields(scene: Scene) -> None:
    vip = await scene.category("VIP")
    created = await scene.contact(
        title="Dr",
        first_name="  Ada ",
        surname="Lovelace",
        phone=PHONE,
        email=" Ada.Lovelace@Example.COM ",
        telegram_chat_id="123456789",
        category_ids=[vip["id"]],
        notes="likes\nengines",
    )
    assert created["phone"] == PHONE_E164
    assert created["email"] == "ada.lovelace@example.com"
    assert created["first_name"] == "Ada"
    assert created["category_ids"] == [vip["id"]]
    assert created["organization_id"] == str(scene.home.org.id)
    assert created["opted_out"] is False and created["opted_out_at"] is None and created["opted_out_via"] is None
    assert created["is_unknown"] is False and created["servicechain_id"] is None
    for key in ("id", "created_at", "updated_at", "title", "surname", "telegram_chat_id", "notes"):
        assert key in created

    url = f"{API}/contacts/{created['id']}"
    got = await scene.client.get(url, headers=scene.home.headers)
    assert got.status_code == 200 and got.json() == created

    chain = await scene.chain(scene.home)
    patched = await scene.client.patch(
        url,
        json={"surname": "King", "email": None, "category_ids": [], "servicechain_id": chain},
        headers=scene.home.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["surname"] == "King" and body["email"] is None and body["category_ids"] == []
    assert body["servicechain_id"] == chain
    assert body["phone"] == PHONE_E164 and body["title"] == "Dr"  # untouched

    listed = await scene.client.get(f"{API}/contacts", headers=scene.home.headers)
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 1 and page["limit"] == 50 and page["offset"] == 0
    assert [c["id"] for c in page["items"]] == [created["id"]]

    deleted = await scene.client.delete(url, headers=scene.home.headers)
    assert deleted.status_code == 204
    assert (await scene.client.get(url, headers=scene.home.headers)).status_code == 404
    assert (await scene.client.delete(url, headers=scene.home.headers)).status_code == 404


async def test_opt_out_stamps_time_and_clears(scene: Scene) -> None:
    contact = await scene.contact(phone=PHONE)
    url = f"{API}/contacts/{contact['id']}"
    out = (await scene.client.patch(url, json={"opted_out": True}, headers=scene.home.headers)).json()
    assert out["opted_out"] is True and out["opted_out_at"] is not None
    again = await scene.client.patch(url, json={"opted_out": True, "first_name": "Eve"}, headers=scene.home.headers)
    assert again.json()["opted_out_at"] == out["opted_out_at"]  # repeating the state keeps the original time
    back = (await scene.client.patch(url, json={"opted_out": False}, headers=scene.home.headers)).json()
    assert back["opted_out"] is False and back["opted_out_at"] is None and back["opted_out_via"] is None
    born_out = await scene.contact(email="x@example.org", opted_out=True)
    assert born_out["opted_out_at"] is not None


async def test_opt_out_service_method_records_the_service(scene: Scene) -> None:
    contact = await scene.contact(phone=PHONE)
    async with scene.world.sessions() as session:
        service = ContactService(session, scene.home.org.id)
        updated = await service.set_opt_out(uuid.UUID(contact["id"]), True, via="twilio")
        assert updated.opted_out and updated.opted_out_via == "twilio" and updated.opted_out_at is not None
        assert (await service.find_by_address("phone", "+44 (0)20 7946 0958")) is not None
        assert (await service.find_by_address("phone", "garbage")) is None
        unknown = await service.create_unknown("telegram_chat_id", "987654")
        assert unknown.is_unknown and unknown.telegram_chat_id == "987654" and unknown.category_ids == []
        assert unknown.display_name == "987654"
        await session.commit()
    async with scene.world.sessions() as session:  # the other organization sees none of it
        theirs = ContactService(session, scene.other.org.id)
        assert await theirs.find_by_address("phone", PHONE) is None
        assert await theirs.list_by_ids([uuid.UUID(contact["id"])]) == []
        with pytest.raises(NotFoundError):
            await theirs.set_opt_out(uuid.UUID(contact["id"]), False)


async def test_category_crud_and_unique_names(scene: Scene) -> None:
    created = await scene.category("Customers")
    assert created["name"] == "Customers" and created["description"] is None
    clash = await scene.post("/categories", {"name": "customers"})
    assert clash.status_code == 409
    assert (await scene.post("/categories", {"name": "Customers"}, scene.other)).status_code == 201  # per org

    url = f"{API}/categories/{created['id']}"
    patched = await scene.client.patch(url, json={"description": "Paying"}, headers=scene.home.headers)
    assert patched.status_code == 200 and patched.json()["description"] == "Paying"
    await scene.category("Staff")
    rename = await scene.client.patch(url, json={"name": "staff"}, headers=scene.home.headers)
    assert rename.status_code == 409
    same = await scene.client.patch(url, json={"name": "CUSTOMERS"}, headers=scene.home.headers)
    assert same.status_code == 200 and same.json()["name"] == "CUSTOMERS"

    listed = (await scene.client.get(f"{API}/categories", headers=scene.home.headers)).json()
    assert [c["name"] for c in listed["items"]] == ["CUSTOMERS", "Staff"] and listed["total"] == 2

    contact = await scene.contact(category_ids=[created["id"]])
    assert (await scene.client.delete(url, headers=scene.home.headers)).status_code == 204
    again = await scene.client.get(f"{API}/contacts/{contact['id']}", headers=scene.home.headers)
    assert again.status_code == 200 and again.json()["category_ids"] == []  # the contact stays


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (0)20-7946-0958", "+442079460958"),
        ("+1 (202) 555-0143", "+12025550143"),
        ("tel:+49-30-123456", "+4930123456"),
    ],
)
async def test_phone_is_normalised_to_e164(scene: Scene, raw: str, expected: str) -> None:
    assert (await scene.contact(phone=raw))["phone"] == expected


@pytest.mark.parametrize(
    "raw", ["not a phone", "020 7946 0958", "+44 1", "+999 123 456", "+44 20 7946 0958 ext. 12", "+4420794609581234"]
)
async def test_bad_phone_is_422_with_field_error(scene: Scene, raw: str) -> None:
    response = await scene.post("/contacts", {"first_name": "Ada", "phone": raw})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "phone" in field_errors(response)


async def test_national_numbers_with_default_region(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fields.DEFAULT_REGION_ENV, "GB")
    fields.configured_region.cache_clear()
    try:
        assert (await scene.contact(phone="020 7946 0958"))["phone"] == PHONE_E164
    finally:
        monkeypatch.delenv(fields.DEFAULT_REGION_ENV)
        fields.configured_region.cache_clear()
    assert (await scene.post("/contacts", {"phone": "020 7946 0958"})).status_code == 422


@pytest.mark.parametrize(
    "raw", ["plainaddress", "a@b", "a@@b.com", "a b@c.com", ".a@b.com", "a..b@c.com", "a@-b.com", "a@b.c", "é@x.com"]
)
async def test_bad_email_is_422(scene: Scene, raw: str) -> None:
    response = await scene.post("/contacts", {"first_name": "Ada", "email": raw})
    assert response.status_code == 422, response.text
    assert "email" in field_errors(response)


async def test_several_field_errors_at_once(scene: Scene) -> None:
    response = await scene.post("/contacts", {"phone": "nope", "email": "nope", "telegram_chat_id": "12 34"})
    assert response.status_code == 422
    assert set(field_errors(response)) == {"phone", "email", "telegram_chat_id"}


async def test_contact_needs_a_name_or_an_address(scene: Scene) -> None:
    assert (await scene.post("/contacts", {})).status_code == 422
    assert (await scene.post("/contacts", {"title": "Mr", "first_name": "   "})).status_code == 422
    contact = await scene.contact(first_name=None, email="only@example.com")
    emptied = await scene.client.patch(
        f"{API}/contacts/{contact['id']}", json={"email": None}, headers=scene.home.headers
    )
    assert emptied.status_code == 422


async def test_category_ids_must_belong_to_the_organization(scene: Scene) -> None:
    mine = await scene.category("Mine")
    theirs = await scene.category("Theirs", scene.other)
    missing = str(uuid.uuid4())
    for bad in (theirs["id"], missing):
        response = await scene.post("/contacts", {"first_name": "Ada", "category_ids": [mine["id"], bad]})
        assert response.status_code == 422, response.text
        message = field_errors(response)["category_ids"]
        assert bad in message and mine["id"] not in message
    contact = await scene.contact(category_ids=[mine["id"], mine["id"]])
    assert contact["category_ids"] == [mine["id"]]
    response = await scene.client.patch(
        f"{API}/contacts/{contact['id']}", json={"category_ids": [theirs["id"]]}, headers=scene.home.headers
    )
    assert response.status_code == 422
    # another organization's id answers exactly like a random one
    assert theirs["id"] in response.json()["detail"]


async def test_servicechain_must_belong_to_the_organization(scene: Scene) -> None:
    theirs = await scene.chain(scene.other)
    for bad in (theirs, str(uuid.uuid4())):
        response = await scene.post("/contacts", {"first_name": "Ada", "servicechain_id": bad})
        assert response.status_code == 422, response.text
        assert "servicechain_id" in field_errors(response)
    mine = await scene.chain(scene.home)
    contact = await scene.contact(servicechain_id=mine)
    assert contact["servicechain_id"] == mine
    cleared = await scene.client.patch(
        f"{API}/contacts/{contact['id']}", json={"servicechain_id": None}, headers=scene.home.headers
    )
    assert cleared.status_code == 200 and cleared.json()["servicechain_id"] is None


# ---------------------------------------------------------------- search


async def test_search_and_category_filter(scene: Scene) -> None:
    friends = await scene.category("Friends")
    ada = await scene.contact(first_name="Ada", surname="Lovelace", phone=PHONE, category_ids=[friends["id"]])
    grace = await scene.contact(first_name="Grace", surname="Hopper", email="grace@navy.example.com")
    alan = await scene.contact(first_name="Alan", surname="Turing", phone="+1 202 555 0143")
    await scene.contact(scene.other, first_name="Ada", surname="Other")

    async def ids(**params: Any) -> list[str]:
        response = await scene.client.get(f"{API}/contacts", params=params, headers=scene.home.headers)
        assert response.status_code == 200, response.text
        return sorted(c["id"] for c in response.json()["items"])

    assert await ids(q="ada") == [ada["id"]]
    assert await ids(q="LOVELACE") == [ada["id"]]
    assert await ids(q="ada lovelace") == [ada["id"]]
    assert await ids(q="navy.example") == [grace["id"]]
    assert await ids(q="7946") == [ada["id"]]
    assert await ids(q="+44 20 7946") == [ada["id"]]
    assert await ids(q="(20) 7946-0958") == [ada["id"]]
    assert await ids(q="+1 202") == [alan["id"]]
    assert await ids(q="Ada Hopper") == []  # every word must match
    assert await ids(q="%") == [] and await ids(q="_") == []  # wildcards are literal
    assert await ids(category_id=friends["id"]) == [ada["id"]]
    assert await ids(category_id=friends["id"], q="grace") == []
    assert await ids(category_id=str(uuid.uuid4())) == []
    assert len(await ids()) == 3


async def test_pagination(scene: Scene) -> None:
    for i in range(5):
        await scene.contact(first_name=f"P{i}")
    response = await scene.client.get(f"{API}/contacts?limit=2&offset=2", headers=scene.home.headers)
    body = response.json()
    assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 2 and len(body["items"]) == 2
    assert (await scene.client.get(f"{API}/contacts?limit=501", headers=scene.home.headers)).status_code == 400


# ---------------------------------------------------------------- tenancy


async def test_other_organization_ids_answer_404(scene: Scene) -> None:
    theirs = await scene.contact(scene.other, first_name="Secret", phone=PHONE)
    their_category = await scene.category("Hidden", scene.other)
    headers = scene.home.headers
    for path, body in (
        (f"/contacts/{theirs['id']}", {"first_name": "Hijack"}),
        (f"/categories/{their_category['id']}", {"name": "Hijack"}),
        (f"/contacts/{uuid.uuid4()}", {"first_name": "Nobody"}),
        (f"/categories/{uuid.uuid4()}", {"name": "Nobody"}),
    ):
        assert (await scene.client.get(API + path, headers=headers)).status_code == 404
        patch = await scene.client.patch(API + path, json=body, headers=headers)
        assert patch.status_code == 404
        assert patch.json()["detail"] == "Not found."
        assert (await scene.client.delete(API + path, headers=headers)).status_code == 404
    # nothing changed on their side
    still = await scene.client.get(f"{API}/contacts/{theirs['id']}", headers=scene.other.headers)
    assert still.json()["first_name"] == "Secret"
    cat = await scene.client.get(f"{API}/categories/{their_category['id']}", headers=scene.other.headers)
    assert cat.json()["name"] == "Hidden"


async def test_lists_never_leak(scene: Scene) -> None:
    await scene.contact(scene.other, first_name="Secret", phone=PHONE, email="secret@example.com")
    await scene.category("Hidden", scene.other)
    for params in ({}, {"q": "secret"}, {"q": "7946"}):
        body = (await scene.client.get(f"{API}/contacts", params=params, headers=scene.home.headers)).json()
        assert body["items"] == [] and body["total"] == 0
    body = (await scene.client.get(f"{API}/categories", headers=scene.home.headers)).json()
    assert body["items"] == [] and body["total"] == 0
    export = await scene.client.get(f"{API}/contacts/export", headers=scene.home.headers)
    assert "Secret" not in export.text and export.text.count("\n") == 1


async def test_organization_id_cannot_be_chosen(scene: Scene) -> None:
    response = await scene.post("/contacts", {"first_name": "X", "organization_id": str(scene.other.org.id)})
    assert response.status_code == 400  # unknown field


async def test_sysadmin_has_no_contacts(scene: Scene) -> None:
    admin = await scene.world.user(None, Role.SYSADMIN)
    response = await scene.client.get(f"{API}/contacts", headers=bearer(await scene.world.token(admin)))
    assert response.status_code == 403  # as on the pages (decision 0018)


# ---------------------------------------------------------------- scopes and authentication


async def test_scopes(scene: Scene) -> None:
    user = await scene.world.user(scene.home.org, Role.USER)
    reader = bearer(await scene.world.token(user, ["contacts:read"]))
    nothing = bearer(await scene.world.token(user, ["messages:read"]))
    contact = await scene.contact()
    category = await scene.category("C")
    writes = [
        ("POST", "/contacts", {"first_name": "A"}),
        ("PATCH", f"/contacts/{contact['id']}", {"first_name": "B"}),
        ("DELETE", f"/contacts/{contact['id']}", None),
        ("POST", "/categories", {"name": "D"}),
        ("PATCH", f"/categories/{category['id']}", {"name": "E"}),
        ("DELETE", f"/categories/{category['id']}", None),
    ]
    for method, path, body in writes:
        response = await scene.client.request(method, API + path, json=body, headers=reader)
        assert response.status_code == 403, (method, path, response.text)
    imported = await scene.client.post(
        f"{API}/contacts/import", files={"file": ("c.csv", b"first_name\nA\n", "text/csv")}, headers=reader
    )
    assert imported.status_code == 403
    reads = [
        "/contacts",
        f"/contacts/{contact['id']}",
        "/contacts/export",
        "/categories",
        f"/categories/{category['id']}",
    ]
    for path in reads:
        assert (await scene.client.get(API + path, headers=reader)).status_code == 200, path
        assert (await scene.client.get(API + path, headers=nothing)).status_code == 403, path
        assert (await scene.client.get(API + path)).status_code == 401, path
        assert (await scene.client.get(API + path, headers=bearer("garbage"))).status_code == 401, path
    for method, path, body in writes:
        assert (await scene.client.request(method, API + path, json=body)).status_code == 401


async def test_api_client_with_contacts_scopes(scene: Scene) -> None:
    client_id, secret = await scene.world.api_client(scene.home.org, ["contacts:read", "contacts:write"])
    token = await scene.client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    headers = bearer(token.json()["access_token"])
    response = await scene.client.post(f"{API}/contacts", json={"phone": PHONE}, headers=headers)
    assert response.status_code == 201 and response.json()["organization_id"] == str(scene.home.org.id)


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": "x" * 101},
        {"title": "x" * 51},
        {"phone": "1" * 100_000},
        {"notes": "x" * 5001},
        {"first_name": 12},
        {"first_name": ["Ada"]},
        {"opted_out": "yes"},
        {"category_ids": ["not-a-uuid"]},
        {"category_ids": "x"},
        {"category_ids": [str(uuid.uuid4()) for _ in range(201)]},
        {"servicechain_id": "nope"},
        {"first_name": "Ada", "is_admin": True},
        {"first_name": "Ada", "opted_out_at": "2020-01-01T00:00:00Z"},
        {"first_name": "Ada", "is_unknown": True},
        {"first_name": "Ada\x00"},
        {"first_name": "Ada\nBob"},
        {"first_name": "Ada", "notes": "bell\x07"},
        [],
        "just a string",
    ],
)
async def test_hostile_contact_bodies_are_4xx(scene: Scene, body: Any) -> None:
    response = await scene.post("/contacts", body)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await scene.client.get(f"{API}/contacts", headers=scene.home.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "body", [{"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": 3}, {"name": "a\x00"}, {"nam": "x"}, {}]
)
async def test_hostile_category_bodies_are_4xx(scene: Scene, body: Any) -> None:
    response = await scene.post("/categories", body)
    assert 400 <= response.status_code < 500, response.text


async def test_hostile_queries_and_paths(scene: Scene) -> None:
    headers = scene.home.headers
    for params in ({"q": "x" * 201}, {"q": "a\x00b"}, {"category_id": "nope"}, {"limit": "-1"}, {"offset": "x"}):
        response = await scene.client.get(f"{API}/contacts", params=params, headers=headers)
        assert 400 <= response.status_code < 500, (params, response.text)
    assert (await scene.client.get(f"{API}/contacts/export", params={"q": "\x00"}, headers=headers)).status_code == 422
    assert (await scene.client.get(f"{API}/contacts/not-a-uuid", headers=headers)).status_code in (400, 404, 405)
    response = await scene.client.post(
        f"{API}/contacts", content=b"{not json", headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 400
    response = await scene.client.patch(f"{API}/contacts/{uuid.uuid4()}", json={"bogus": 1}, headers=headers)
    assert response.status_code == 400
