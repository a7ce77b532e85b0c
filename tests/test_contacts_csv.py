"""CSV import and export of contacts: per-row reports, matching, malformed files, round trips, tenancy."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.contacts import csvio
from app.tenants.models import Organization, Role
from tests.conftest import World, bearer

API = "/api/v1"


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

    async def upload(
        self, content: bytes | str, org: Org | None = None, params: dict[str, str] | None = None, name: str = "c.csv"
    ) -> Any:
        raw = content.encode() if isinstance(content, str) else content
        return await self.client.post(
            f"{API}/contacts/import",
            files={"file": (name, raw, "text/csv")},
            params=params or {},
            headers=(org or self.home).headers,
        )

    async def imported(self, content: bytes | str, org: Org | None = None, **kw: Any) -> dict[str, Any]:
        response = await self.upload(content, org, **kw)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def contacts(self, org: Org | None = None, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"{API}/contacts", params={"limit": 500, **params}, headers=(org or self.home).headers
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def categories(self, org: Org | None = None) -> dict[str, str]:
        response = await self.client.get(f"{API}/categories", headers=(org or self.home).headers)
        return {c["name"]: c["id"] for c in response.json()["items"]}

    async def export(self, org: Org | None = None, **params: Any) -> str:
        response = await self.client.get(f"{API}/contacts/export", params=params, headers=(org or self.home).headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        return response.text


@pytest.fixture
async def scene(client: AsyncTestClient[Any], world: World) -> Scene:
    orgs = []
    for name in ("Home", "Other"):
        org = await world.org(name)
        user = await world.user(org, Role.USER)
        orgs.append(Org(org, bearer(await world.token(user))))
    return Scene(client, world, orgs[0], orgs[1])


def by_email(contacts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["email"]: c for c in contacts if c["email"]}


# ---------------------------------------------------------------- import: rows


async def test_import_creates_and_reports_bad_rows(scene: Scene) -> None:
    content = (
        "title,first_name,surname,phone,email,telegram_chat_id,categories,opted_out\n"
        "Dr,Ada,Lovelace,+44 20 7946 0958,ADA@example.com,123,VIP; Friends|vip,\n"  # line 2
        "Mr,Bad,Phone,not a phone,bad@example.com,,,\n"  # line 3
        ",Grace,Hopper,,grace@example.com,,Friends,yes\n"  # line 4
        ",Two,Errors,+44 1,nope,,,maybe\n"  # line 5
        "\n"  # blank lines are skipped
        ",,,,,,,\n"  # so are rows with nothing in them
        ",Alan,Turing,+1 202 555 0143,,,,false\n"  # line 8
    )
    report = await scene.imported(content)
    assert report["created"] == 3 and report["updated"] == 0 and report["rejected"] == 2
    assert report["errors"][0]["row"] == 3 and set(report["errors"][0]["errors"]) == {"phone"}
    assert report["errors"][1]["row"] == 5 and set(report["errors"][1]["errors"]) == {"phone", "email", "opted_out"}

    cats = await scene.categories()
    assert set(cats) == {"VIP", "Friends"}
    contacts = by_email(await scene.contacts())
    ada = contacts["ada@example.com"]
    assert ada["phone"] == "+442079460958" and ada["title"] == "Dr" and ada["telegram_chat_id"] == "123"
    assert sorted(ada["category_ids"]) == sorted(cats.values())
    grace = contacts["grace@example.com"]
    assert grace["opted_out"] is True and grace["opted_out_at"] is not None and grace["opted_out_via"] is None
    assert grace["category_ids"] == [cats["Friends"]]
    assert "bad@example.com" not in contacts


async def test_import_updates_matching_contacts(scene: Scene) -> None:
    response = await scene.client.post(
        f"{API}/contacts",
        json={"first_name": "Ada", "surname": "Lovelace", "phone": "+442079460958", "notes": "keep me"},
        headers=scene.home.headers,
    )
    ada = response.json()
    vip = (await scene.client.post(f"{API}/categories", json={"name": "VIP"}, headers=scene.home.headers)).json()
    await scene.client.patch(
        f"{API}/contacts/{ada['id']}", json={"category_ids": [vip["id"]]}, headers=scene.home.headers
    )
    grace = (
        await scene.client.post(f"{API}/contacts", json={"email": "grace@example.com"}, headers=scene.home.headers)
    ).json()

    content = (
        "first_name,surname,phone,email,categories,notes\n"
        "Augusta,,+44 (0)20 7946-0958,ada@example.com,Friends,\n"  # phone in another notation → Ada
        "Grace,Hopper,,GRACE@example.com,,\n"  # e-mail, any case → Grace
        "New,Person,,new@example.com,,\n"
        "New,Again,,new@example.com,,\n"  # the same file's earlier row → updated
    )
    report = await scene.imported(content)
    assert (report["created"], report["updated"], report["rejected"]) == (1, 3, 0), report

    got = {c["id"]: c for c in await scene.contacts()}
    assert len(got) == 3
    updated = got[ada["id"]]
    assert updated["first_name"] == "Augusta" and updated["surname"] == "Lovelace"  # blank cells keep values
    assert updated["notes"] == "keep me" and updated["email"] == "ada@example.com"
    cats = await scene.categories()
    assert sorted(updated["category_ids"]) == sorted([cats["VIP"], cats["Friends"]])  # categories are added
    assert got[grace["id"]]["first_name"] == "Grace" and got[grace["id"]]["surname"] == "Hopper"
    assert by_email(list(got.values()))["new@example.com"]["surname"] == "Again"


async def test_import_matches_by_id_first_and_refuses_ambiguous_rows(scene: Scene) -> None:
    a = (await scene.client.post(f"{API}/contacts", json={"phone": "+442079460958"}, headers=scene.home.headers)).json()
    b = (await scene.client.post(f"{API}/contacts", json={"email": "b@example.com"}, headers=scene.home.headers)).json()
    content = (
        "id,first_name,phone,email\n"
        f"{b['id']},Bee,+12025550143,\n"  # the id wins over the phone
        ",Who,+442079460958,b@example.com\n"  # phone → a, e-mail → b: which one?
        "not-a-uuid,X,,x@example.com\n"
    )
    report = await scene.imported(content)
    assert (report["created"], report["updated"], report["rejected"]) == (0, 1, 2), report
    assert "_row" in report["errors"][0]["errors"] and report["errors"][0]["row"] == 3
    assert set(report["errors"][1]["errors"]) == {"id"}
    got = {c["id"]: c for c in await scene.contacts()}
    assert got[b["id"]]["first_name"] == "Bee" and got[b["id"]]["phone"] == "+12025550143"
    assert got[a["id"]]["first_name"] is None


async def test_import_never_resubscribes_an_opted_out_contact(scene: Scene) -> None:
    contact = (
        await scene.client.post(
            f"{API}/contacts", json={"email": "out@example.com", "opted_out": True}, headers=scene.home.headers
        )
    ).json()
    report = await scene.imported("email,opted_out,first_name\nout@example.com,false,Still\nin@example.com,no,In\n")
    assert (report["created"], report["updated"]) == (1, 1)
    got = by_email(await scene.contacts())
    assert got["out@example.com"]["opted_out"] is True
    assert got["out@example.com"]["opted_out_at"] == contact["opted_out_at"]
    assert got["out@example.com"]["first_name"] == "Still"
    assert got["in@example.com"]["opted_out"] is False
    report = await scene.imported("email,opted_out\nin@example.com,TRUE\n")
    assert report["updated"] == 1 and by_email(await scene.contacts())["in@example.com"]["opted_out"] is True


async def test_import_row_problems(scene: Scene) -> None:
    content = (
        "first_name,email,notes\n"
        "Ada,ada@example.com,ok\n"
        "Too,many@example.com,fields,here\n"  # more cells than columns
        ",,just a note\n"  # nothing that identifies a contact
        f"{'x' * 101},long@example.com,\n"
        "Short\n"  # fewer cells than columns is fine
        "Trailing,trailing@example.com,,,,\n"  # so are empty cells past the last column
        "Ctl\x07,ctl@example.com,\n"
    )
    report = await scene.imported(content)
    assert (report["created"], report["rejected"]) == (3, 4), report
    rows = {e["row"]: e["errors"] for e in report["errors"]}
    assert set(rows) == {3, 4, 5, 8}
    assert "_row" in rows[3] and "_row" in rows[4] and "first_name" in rows[5] and "first_name" in rows[8]


async def test_import_refuses_the_lengths_the_api_refuses(scene: Scene) -> None:
    """The limits come from ContactCreate, those of fields with a description (phone, Telegram) included."""
    content = f"first_name,phone,telegram_chat_id\nLong,{'1' * 65},\nLonger,,{'9' * 65}\n"
    report = await scene.imported(content)
    assert (report["created"], report["rejected"]) == (0, 2), report
    rows = {e["row"]: e["errors"] for e in report["errors"]}
    assert rows[2] == {"phone": "At most 64 characters."}
    assert rows[3] == {"telegram_chat_id": "At most 64 characters."}


async def test_import_accepts_spreadsheet_habits(scene: Scene) -> None:
    content = (
        "\ufeffFirst Name;Last-Name;Mobile;E-Mail;Category\r\nAda;Lovelace;+44 20 7946 0958;ada@example.com;A|B\r\n"
    )
    report = await scene.imported(content.encode("utf-8"))
    assert report["created"] == 1, report
    ada = (await scene.contacts())[0]
    assert (ada["first_name"], ada["surname"], ada["phone"]) == ("Ada", "Lovelace", "+442079460958")
    assert set(await scene.categories()) == {"A", "B"}
    tabbed = await scene.imported("first_name\tphone\nAlan\t+1 202 555 0143\n")
    assert tabbed["created"] == 1


async def test_import_region_for_national_numbers(scene: Scene) -> None:
    content = "first_name,phone\nAda,020 7946 0958\nAlan,+1 202 555 0143\n"
    without = await scene.imported(content)
    assert (without["created"], without["rejected"]) == (1, 1)
    assert "international" in without["errors"][0]["errors"]["phone"]
    report = await scene.imported(content, params={"region": "gb"})
    assert (report["created"], report["updated"]) == (1, 1), report
    assert {c["phone"] for c in await scene.contacts()} == {"+442079460958", "+12025550143"}
    bad = await scene.upload(content, params={"region": "XX"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "region"
    assert (await scene.upload(content, params={"region": "GBR"})).status_code == 400


async def test_import_is_scoped_to_the_organization(scene: Scene) -> None:
    theirs = (
        await scene.client.post(
            f"{API}/contacts", json={"first_name": "Theirs", "email": "t@example.com"}, headers=scene.other.headers
        )
    ).json()
    their_vip = (await scene.client.post(f"{API}/categories", json={"name": "VIP"}, headers=scene.other.headers)).json()
    content = f"id,first_name,email,categories\n{theirs['id']},Mine,t@example.com,VIP\n"
    report = await scene.imported(content)
    assert (report["created"], report["updated"]) == (1, 0)  # their id and e-mail are unknown here
    mine = (await scene.contacts())[0]
    assert mine["id"] != theirs["id"] and mine["first_name"] == "Mine"
    assert mine["category_ids"] != [their_vip["id"]] and len(mine["category_ids"]) == 1
    still = (await scene.contacts(scene.other))[0]
    assert still["first_name"] == "Theirs" and still["category_ids"] == []


# ---------------------------------------------------------------- import: malformed files


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"  \n\r\n ", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        ("first_name\nAda\n".encode("utf-16"), "UTF-16"),
        ("first_name\nJosé\n".encode("latin-1"), "UTF-8"),
        (b"first_name,shoe_size\nAda,7\n", "shoe_size"),
        (b"Ada,Lovelace,+442079460958\n", "Unknown columns"),
        (b"first_name,First Name\nAda,Ada\n", "more than once"),
        (b"first_name,,email\nAda,x,a@example.com\n", "needs a name"),
        (b'first_name,email\n"Ada,ada@example.com\nBob,b@example.com\n', "not valid CSV"),
        (b'first_name,email\n"Ada"x,ada@example.com\n', "not valid CSV"),
    ],
)
async def test_malformed_files_are_422(scene: Scene, content: bytes, words: str) -> None:
    response = await scene.upload(content)
    assert response.status_code == 422, response.text
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert words.lower() in body["detail"].lower(), body["detail"]
    assert body["errors"][0]["field"] == "file"
    assert await scene.contacts() == []


async def test_header_only_imports_nothing(scene: Scene) -> None:
    assert await scene.imported("first_name,email\n") == {"created": 0, "updated": 0, "rejected": 0, "errors": []}


async def test_row_and_size_limits(scene: Scene) -> None:
    too_many = "email\n" + "".join(f"p{i}@example.com\n" for i in range(csvio.MAX_ROWS + 1))
    response = await scene.upload(too_many)
    assert response.status_code == 422 and "10000 rows" in response.json()["detail"]

    padding = "notes\n" + ("x" * 1000 + "\n") * (csvio.MAX_BYTES // 1001 + 1)
    assert len(padding) > csvio.MAX_BYTES
    response = await scene.upload(padding)
    assert response.status_code == 422 and "5 MiB" in response.json()["detail"]

    huge = b"notes\n" + b"x" * (csvio.MAX_BYTES + 512 * 1024)
    response = await scene.upload(huge)
    assert response.status_code == 413
    assert await scene.contacts() == []


async def test_the_largest_allowed_file_imports(scene: Scene) -> None:
    rows = "".join(f"P{i},+1 202 555 {i % 10000:04d},p{i}@example.com\n" for i in range(csvio.MAX_ROWS))
    report = await scene.imported("first_name,phone,email\n" + rows)
    assert report["rejected"] == 0 and report["created"] + report["updated"] == csvio.MAX_ROWS
    total = (await scene.client.get(f"{API}/contacts", headers=scene.home.headers)).json()["total"]
    assert total == report["created"]


async def test_wrong_upload_shapes_are_4xx(scene: Scene) -> None:
    headers = scene.home.headers
    url = f"{API}/contacts/import"
    assert (
        await scene.client.post(url, files={"other": ("c.csv", b"first_name\nA\n")}, headers=headers)
    ).status_code == 400
    assert (await scene.client.post(url, data={"file": "first_name\nA\n"}, headers=headers)).status_code == 400
    assert (await scene.client.post(url, json={"file": "x"}, headers=headers)).status_code in (400, 415)
    assert (await scene.client.post(url, headers=headers)).status_code == 400


# ---------------------------------------------------------------- export


async def test_export_round_trips(scene: Scene) -> None:
    content = (
        "title,first_name,surname,phone,email,telegram_chat_id,categories,opted_out,notes\n"
        'Dr,"Ada, Countess",Lovelace,+44 20 7946 0958,ada@example.com,-1001234567890,VIP;Friends,false,'
        '"line one\nline ""two"""\n'
        ",=1+1,@SUM(A1),+1 202 555 0143,,@channel_name,VIP,true,-notes\n"
        ",Zoë,Ünïcödé,,zoe@example.com,,,,\n"
    )
    first = await scene.imported(content)
    assert first["created"] == 3 and first["rejected"] == 0, first
    before = sorted(await scene.contacts(), key=lambda c: c["id"])

    exported = await scene.export()
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == list(csvio.EXPORT_COLUMNS)
    assert len(rows) == 4
    cells = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    formula = next(c for c in cells.values() if c["phone"] == "+12025550143")
    assert formula["first_name"] == "'=1+1" and formula["surname"] == "'@SUM(A1)"  # not run by spreadsheets
    assert formula["telegram_chat_id"] == "@channel_name" and formula["opted_out"] == "true"

    again = await scene.imported(exported)
    assert (again["created"], again["updated"], again["rejected"]) == (0, 3, 0), again
    after = sorted(await scene.contacts(), key=lambda c: c["id"])
    for old, new in zip(before, after, strict=True):
        old.pop("updated_at"), new.pop("updated_at")
        assert old == new
    assert len(await scene.categories()) == 2

    # another organization imports the same file: new contacts, its own categories, the same data
    moved = await scene.imported(exported, scene.other)
    assert (moved["created"], moved["updated"]) == (3, 0)
    theirs = {c["email"] or c["phone"]: c for c in await scene.contacts(scene.other)}
    assert theirs["ada@example.com"]["first_name"] == "Ada, Countess"
    assert theirs["ada@example.com"]["notes"] == 'line one\nline "two"'
    assert theirs["+12025550143"]["first_name"] == "=1+1" and theirs["+12025550143"]["notes"] == "-notes"
    assert theirs["zoe@example.com"]["surname"] == "Ünïcödé"
    assert set(await scene.categories(scene.other)) == {"VIP", "Friends"}


async def test_export_filters_and_batches(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "".join(f"P{i},p{i}@example.com,{'Even' if i % 2 == 0 else 'Odd'}\n" for i in range(7))
    await scene.imported("first_name,email,categories\n" + rows)
    cats = await scene.categories()

    original = csvio.export_csv

    def small_batches(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "batch_size": 2})

    monkeypatch.setattr(csvio, "export_csv", small_batches)
    everything = list(csv.DictReader(io.StringIO(await scene.export())))
    assert sorted(r["first_name"] for r in everything) == [f"P{i}" for i in range(7)]
    assert len({r["id"] for r in everything}) == 7
    even = list(csv.DictReader(io.StringIO(await scene.export(category_id=cats["Even"]))))
    assert sorted(r["first_name"] for r in even) == ["P0", "P2", "P4", "P6"]
    assert all(r["categories"] == "Even" for r in even)
    one = list(csv.DictReader(io.StringIO(await scene.export(q="p3@"))))
    assert [r["first_name"] for r in one] == ["P3"]
    assert (
        await scene.client.get(
            f"{API}/contacts/export", params={"category_id": str(uuid.uuid4())}, headers=scene.home.headers
        )
    ).text.count("\n") == 1


async def test_a_row_the_database_refuses_does_not_abort_the_others(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = csvio._new_contact
    taken = (
        await scene.client.post(f"{API}/contacts", json={"first_name": "Theirs"}, headers=scene.other.headers)
    ).json()["id"]

    def sabotage(row: Any, categories: Any) -> Any:
        contact = original(row, categories)
        if contact.first_name == "Boom":
            contact.id = uuid.UUID(taken)  # a primary key in use: the database refuses this row at flush time
        return contact

    monkeypatch.setattr(csvio, "_new_contact", sabotage)
    old = (
        await scene.client.post(
            f"{API}/contacts", json={"first_name": "Old", "email": "a@example.com"}, headers=scene.home.headers
        )
    ).json()
    content = (
        "first_name,email,categories\n"
        "Renamed,a@example.com,X\n"
        "Boom,b@example.com,X\n"
        "Fine,c@example.com,X;Y\n"
        "Again,c@example.com,Z\n"
    )
    report = await scene.imported(content)
    assert (report["created"], report["updated"], report["rejected"]) == (1, 2, 1), report
    assert report["errors"] == [{"row": 3, "errors": {"_row": csvio.CONFLICT}}]
    got = by_email(await scene.contacts())
    assert set(got) == {"a@example.com", "c@example.com"}
    cats = await scene.categories()
    assert got["a@example.com"]["id"] == old["id"] and got["a@example.com"]["first_name"] == "Renamed"
    assert got["a@example.com"]["category_ids"] == [cats["X"]]
    assert got["c@example.com"]["first_name"] == "Again"
    assert sorted(got["c@example.com"]["category_ids"]) == sorted([cats["X"], cats["Y"], cats["Z"]])
