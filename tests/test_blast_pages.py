"""The blast pages (issue 10 item 6): the list with a progress bar per row, the create page (live preview,
audience count, contact picker, send time) creating blasts under the API's rules, the detail page whose
status block updates itself and stops once the blast has ended, cancel with its confirmation, CSRF, roles
and tenancy."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, insert, select, update

from app.blasts.models import Blast, BlastState
from app.config import Settings
from app.contacts.models import Category, Contact, contact_category
from app.messaging.models import Message, MessageState
from app.tenants.models import Organization, Plan, Role
from tests.conftest import World
from tests.pipeline import fast_settings
from tests.test_web_messaging import HX, add_chain, add_contact, member
from tests.test_web_pages import csrf, login, post_form

Client = AsyncTestClient[Litestar]
STATUS = {**HX, "HX-Target": "blast-status"}
LOG = {**HX, "HX-Target": "message-list"}
ETAG = re.compile(r'data-etag="([^"]+)"')
MESSAGE_ROW = re.compile(r'<tr id="message-[0-9a-f-]{36}"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def add_category(world: World, org: Organization, contacts: list[Contact], name: str = "Members") -> Category:
    async with world.sessions() as session:
        category = Category(organization_id=org.id, name=name)
        session.add(category)
        await session.flush()
        if contacts:
            rows = [{"contact_id": c.id, "category_id": category.id} for c in contacts]
            await session.execute(insert(contact_category), rows)
        await session.commit()
        return category


async def people(world: World, org: Organization, n: int, **fields: Any) -> list[Contact]:
    out = []
    for i in range(n):
        values = {"first_name": f"P{i}", "email": f"p{i}-{uuid.uuid4().hex[:6]}@example.com", **fields}
        out.append(await add_contact(world, org, **values))
    return out


async def add_blast(world: World, org: Organization, name: str = "Spring", **fields: Any) -> Blast:
    async with world.sessions() as session:
        blast = Blast(
            organization_id=org.id,
            name=name,
            content="Hi",
            route=["log"],
            state=fields.pop("state", BlastState.SCHEDULED),
            audience=fields.pop("audience", 2),
            send_at=fields.pop("send_at", datetime.now(UTC) + timedelta(hours=1)),
            **fields,
        )
        session.add(blast)
        await session.commit()
        return blast


def form(chain: Any, categories: Sequence[Any] = (), contacts: Sequence[Any] = (), **fields: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "content": "Hi {{ first_name }}",
        "servicechain_id": str(chain.id),
        "category_ids": [str(c.id) for c in categories],
        "contact_ids": [str(c.id) for c in contacts],
        "intent": "send",
        **fields,
    }


async def blast_count(world: World, org: Organization) -> int:
    async with world.sessions() as session:
        return int(await session.scalar(select(func.count()).where(Blast.organization_id == org.id)) or 0)


# ---------------------------------------------------------------- pages, roles, tenancy


async def test_pages_for_users_and_admins_and_refused_to_others(client: Client, world: World) -> None:
    org, user = await member(world)
    admin = await world.user(org, Role.ORG_ADMIN)
    for who in (user, admin):  # the design's roles: a user sends blasts as an org admin does
        await login(client, who.email)
        listing = await client.get("/blasts")
        assert listing.status_code == 200 and "hx-request" in listing.headers["vary"].lower()
        assert 'data-testid="blasts-empty"' in listing.text and 'href="/blasts/new"' in listing.text
        assert 'href="/blasts"' in (await client.get("/")).text  # the nav link
        new = await client.get("/blasts/new")
        assert new.status_code == 200 and 'id="blast-form"' in new.text
        assert '<label for="f-name">' in new.text and 'type="datetime-local"' in new.text and "UTC" in new.text
        assert 'data-testid="blast-no-contacts"' in new.text  # nothing to send to yet
        await post_form(client, "/logout", {}, page="/")
    root = await world.user(None, Role.SYSADMIN)
    await login(client, root.email)
    assert (await client.get("/blasts")).status_code == 403
    assert (await client.get("/blasts/new")).status_code == 403


async def test_another_organizations_blast_is_404_everywhere_and_csrf_is_enforced(client: Client, world: World) -> None:
    org, user = await member(world)
    other, _ = await member(world)
    theirs = await add_blast(world, other, "Theirs")
    mine = await add_blast(world, org, "Mine")
    await login(client, user.email)
    token = await csrf(client, "/blasts")
    assert (await client.get(f"/blasts/{theirs.id}")).status_code == 404
    assert (await client.get(f"/blasts/{theirs.id}", headers=STATUS)).status_code == 404
    assert (await client.get(f"/blasts/{theirs.id}", headers=LOG)).status_code == 404
    assert (await client.get(f"/blasts/{theirs.id}/cancel")).status_code == 404
    for headers in ({}, {**STATUS, "x-csrftoken": token}):
        r = await client.post(
            f"/blasts/{theirs.id}/cancel", data={"confirmed": "yes", "_csrf_token": token}, headers=headers
        )
        assert r.status_code == 404, r.text
    listing = await client.get("/blasts")
    assert "Mine" in listing.text and "Theirs" not in listing.text
    async with world.sessions() as session:
        assert (await session.get(Blast, theirs.id)).state == BlastState.SCHEDULED  # type: ignore[union-attr]
    assert (await client.get(f"/blasts/{mine.id}")).status_code == 200
    # CSRF: no token, no change (the token itself was used above)
    chain = await add_chain(world, org, ["log"])
    contacts = await people(world, org, 1)
    assert (await client.post("/blasts", data=form(chain, contacts=contacts))).status_code == 403
    assert (await client.post(f"/blasts/{mine.id}/cancel", data={"confirmed": "yes"})).status_code == 403
    assert (await client.post("/blasts/audience", data={}, headers=HX)).status_code == 403
    assert await blast_count(world, org) == 1


# ---------------------------------------------------------------- the create page


async def test_audience_preview_and_contact_picker_fragments(client: Client, world: World) -> None:
    org, user = await member(world)
    group = await people(world, org, 3)
    [skipped] = await people(world, org, 1, opted_out=True, first_name="Otto")
    [steve] = await people(world, org, 1, first_name="Steve", surname="Jobs")
    category = await add_category(world, org, [*group, skipped])
    other, _ = await member(world)
    [stranger] = await people(world, other, 1, first_name="Stranger")
    await login(client, user.email)
    token = await csrf(client, "/blasts/new")
    headers = {**HX, "x-csrftoken": token}

    body = {"category_ids": [str(category.id)], "contact_ids": [str(group[0].id), str(steve.id), str(stranger.id)]}
    r = await client.post("/blasts/audience", data=body, headers=headers)
    assert r.status_code == 200
    # the union, each contact once; the opted-out member counted apart; another organization's contact not at all
    assert 'data-testid="audience-count">4<' in r.text and 'data-testid="audience-skipped">1<' in r.text, r.text
    assert "will be skipped" in r.text

    r = await client.post("/blasts/preview", data={**body, "content": "Hi {{ first_name }}!"}, headers=headers)
    assert r.status_code == 200 and 'name="sample_contact_id"' in r.text
    first = re.search(r'data-testid="blast-preview-text">([^<]*)<', r.text)
    assert first and first.group(1) in {"Hi P0!", "Hi P1!", "Hi P2!", "Hi Steve!"}, r.text
    assert "Otto" not in r.text  # an opted-out member gets nothing, so no preview for them
    picked = {**body, "content": "Hi {{ first_name }}!", "sample_contact_id": str(steve.id)}
    assert "Hi Steve!" in (await client.post("/blasts/preview", data=picked, headers=headers)).text
    broken = await client.post("/blasts/preview", data={**body, "content": "Hi {{ nickname }}"}, headers=headers)
    assert broken.status_code == 200 and "Unknown template variable(s): nickname" in broken.text

    r = await client.post("/blasts/contacts", data={"contact_q": "steve"}, headers=headers)
    assert r.status_code == 200 and f'name="add_contact" value="{steve.id}"' in r.text and "Stranger" not in r.text
    assert "hx-trigger" not in {k.lower() for k in r.headers}
    r = await client.post(
        "/blasts/contacts", data={"contact_q": "steve", "add_contact": str(steve.id)}, headers=headers
    )
    assert f'name="contact_ids" value="{steve.id}" checked' in r.text and 'name="add_contact"' not in r.text
    assert r.headers["hx-trigger"] == "blast-selection"  # the count and the preview follow
    r = await client.post("/blasts/contacts", data={"contact_q": "stranger"}, headers=headers)
    assert "Stranger" not in r.text and "No other contact matches" in r.text

    # without script: "Add" sends the whole form back, which comes back with the contact chosen
    r = await post_form(
        client, "/blasts", {"name": "x", "add_contact": str(steve.id), "contact_q": "steve"}, page="/blasts/new"
    )
    assert r.status_code == 200 and f'name="contact_ids" value="{steve.id}" checked' in r.text
    assert await blast_count(world, org) == 0


async def test_refusals_are_readable_and_keep_the_form(client: Client, world: World) -> None:
    org, user = await member(world, plan=Plan.PAY_IN_ADVANCE, credits=1)
    chain = await add_chain(world, org, ["log"])
    contacts = await people(world, org, 2)
    other, _ = await member(world)
    their_chain = await add_chain(world, other, ["log"])
    [their_contact] = await people(world, other, 1)
    their_category = await add_category(world, other, [their_contact])
    await login(client, user.email)

    async def submit(data: dict[str, Any]) -> Any:
        return await post_form(client, "/blasts", data, page="/blasts/new")

    r = await submit({"intent": "send", "name": "", "content": ""})
    assert r.status_code == 422
    for text in ("Name the blast", "Write the message.", "Choose who gets it", "Choose the servicechain"):
        assert text in r.text, text
    r = await submit(form(chain, contacts=contacts, content="Hi {{ nickname }}", name="Kept name"))
    assert r.status_code == 422 and "Unknown template variable(s): nickname" in r.text
    assert 'value="Kept name"' in r.text and "Hi {{ nickname }}</textarea>" in r.text
    assert all(f'value="{c.id}" checked' in r.text for c in contacts)  # the audience is kept too
    r = await submit(form(chain, contacts=contacts, send_at="2001-01-01T10:00"))
    assert r.status_code == 422 and "That time has passed (UTC)" in r.text
    r = await submit(form(chain, contacts=contacts, send_at="tomorrow"))
    assert r.status_code == 422 and "Enter the date and time" in r.text
    r = await submit(form(their_chain, contacts=contacts))
    assert r.status_code == 422 and "Choose a servicechain from the list." in r.text
    r = await submit(form(chain, categories=[their_category]))
    assert r.status_code == 422 and "Not found in this organization" in r.text
    r = await submit(form(chain, contacts=contacts))  # 2 contacts, 1 credit: nothing is created
    assert r.status_code == 402 and "this blast needs 2 and the organization has 1 available" in r.text
    assert 'value="Spring sale"' in r.text
    async with world.sessions() as session:
        await session.execute(update(Contact).where(Contact.id.in_([c.id for c in contacts])).values(opted_out=True))
        await session.commit()
    r = await submit(form(chain, contacts=contacts))
    assert r.status_code == 422 and "The audience is empty" in r.text
    assert await blast_count(world, org) == 0
    async with world.sessions() as session:
        org_now = await session.get(Organization, org.id)
        assert org_now is not None and org_now.credits_reserved == 0


# ---------------------------------------------------------------- the list


async def test_list_filters_paginates_and_polls_only_while_a_blast_runs(client: Client, world: World) -> None:
    org, user = await member(world)
    for i in range(21):
        await add_blast(world, org, f"Old {i:02d}", state=BlastState.COMPLETED, send_at=None)
    await login(client, user.email)
    first = await client.get("/blasts")
    assert "Page 1 of 2" in first.text and 'data-live="true"' not in first.text
    assert 'aria-label="Progress of Old 20"' in first.text
    second = await client.get("/blasts?page=2", headers={**HX, "HX-Target": "blast-list"})
    assert second.text.lstrip().startswith('<section id="blast-list"') and "Old 00" in second.text
    await add_blast(world, org, "Running now", state=BlastState.SENDING, send_at=None)
    live = await client.get("/blasts")
    assert 'data-live="true"' in live.text and "Running now" in live.text
    etag = ETAG.search(live.text)
    assert etag
    poll = await client.get(
        "/blasts?page=1", headers={**HX, "HX-Target": "blast-list", "If-None-Match": html.unescape(etag.group(1))}
    )
    assert poll.status_code == 304
    filtered = await client.get("/blasts?state=sending")
    assert "Running now" in filtered.text and "Old 01" not in filtered.text
    assert '<option value="sending" selected>' in filtered.text
    none = await client.get("/blasts?state=cancelled")
    assert "No blasts in this state" in none.text
    assert (await client.get("/blasts?state=nonsense&page=x")).status_code == 200


# ---------------------------------------------------------------- the detail page and cancel


async def test_create_a_scheduled_blast_then_cancel_it_with_confirmation(client: Client, world: World) -> None:
    org, user = await member(world)
    chain = await add_chain(world, org, ["log"], name="Default one")
    await add_chain(world, org, ["log"], name="Another")
    async with world.sessions() as session:
        values = {"default_servicechain_id": chain.id}
        await session.execute(update(Organization).where(Organization.id == org.id).values(**values))
        await session.commit()
    contacts = await people(world, org, 2)
    await login(client, user.email)
    new = await client.get("/blasts/new")
    assert re.search(rf'<option value="{chain.id}" selected>Default one</option>', new.text), new.text
    at = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    r = await post_form(client, "/blasts", form(chain, contacts=contacts, send_at=at), page="/blasts/new")
    assert r.status_code == 303, r.text
    blast_url = r.headers["location"]
    detail = await client.get(blast_url)
    assert "accepted for 2 contact(s)" in detail.text and "It starts at" in detail.text
    assert 'data-blast-state="scheduled"' in detail.text and "waiting for its time" in detail.text
    async with world.sessions() as session:
        blast = await session.scalar(select(Blast).where(Blast.organization_id == org.id))
        assert blast is not None and blast.state == BlastState.SCHEDULED and blast.created_by == user.id
        assert blast.send_at is not None and blast.send_at.strftime("%Y-%m-%dT%H:%M") == at  # read as UTC
    assert 'hx-confirm="Cancel the blast' in detail.text and f'action="{blast_url}/cancel"' in detail.text
    # without script the button's form has no confirmation: the confirmation page asks first
    r = await post_form(client, f"{blast_url}/cancel", {}, page=blast_url)
    assert r.status_code == 200 and "Yes, cancel the blast" in r.text
    assert (await client.get(f"{blast_url}/cancel")).status_code == 200
    async with world.sessions() as session:
        assert (await session.scalar(select(Blast.state))) == BlastState.SCHEDULED
    # with htmx (confirmed by hx-confirm): the status block comes back cancelled, polling no more
    token = await csrf(client, blast_url)
    r = await client.post(f"{blast_url}/cancel", data={"confirmed": "yes"}, headers={**STATUS, "x-csrftoken": token})
    assert r.status_code == 200 and 'data-blast-state="cancelled"' in r.text and "hx-trigger" not in r.text
    assert "cancelled." in r.text and 'hx-swap-oob="true"' in r.text  # the flash, out of band
    assert "Cancel blast" not in r.text and 'data-stat="not_created">2<' in r.text
    # once finished: 409, said readably, on both faces
    r = await client.post(f"{blast_url}/cancel", data={"confirmed": "yes"}, headers={**STATUS, "x-csrftoken": token})
    assert r.status_code == 409 and "nothing left to cancel" in r.text
    r = await post_form(client, f"{blast_url}/cancel", {"confirmed": "yes"}, page=blast_url)
    assert r.status_code == 303
    page = await client.get(blast_url)
    assert "nothing left to cancel" in page.text and 'data-blast-state="cancelled"' in page.text
    assert 'hx-trigger="every' not in page.text.split('id="blast-status"')[1].split(">")[0]


async def test_detail_status_follows_the_blast_and_stops_polling_once_ended(client: Client, world: World) -> None:
    """The workers' side is the e2e test's (a real worker in tests/test_blasts.py and e2e/test_blasts.py);
    here the blast's rows move as the state machine moves them, and the page follows."""
    org, admin = await member(world, Role.ORG_ADMIN)
    group = await people(world, org, 4)
    blast = await add_blast(
        world, org, "Half way", state=BlastState.SENDING, audience=4, send_at=None, skipped_opted_out=1
    )
    states = [MessageState.SENT, MessageState.SENT, MessageState.SENDING, MessageState.PENDING]
    async with world.sessions() as session:
        for i, (contact, state) in enumerate(zip(group, states, strict=True)):
            session.add(
                Message(
                    organization_id=org.id, contact_id=contact.id, blast_id=blast.id, state=state, content=f"Hi P{i}"
                )
            )
        await session.commit()
    await login(client, admin.email)
    url = f"/blasts/{blast.id}"
    page = await client.get(url)
    assert 'id="blast-status"' in page.text and 'id="message-list"' in page.text
    assert 'data-progress="50"' in page.text and 'data-stat="skipped_opted_out">1<' in page.text
    assert 'data-stat="MSG_SENT">2<' in page.text and 'data-stat="MSG_PENDING">1<' in page.text
    assert len(MESSAGE_ROW.findall(page.text)) == 4 and 'hx-trigger="every 1s"' in page.text
    status = await client.get(url, headers=STATUS)
    assert status.text.lstrip().startswith('<section id="blast-status"') and 'hx-trigger="every 1s"' in status.text
    etag = html.unescape(ETAG.search(status.text).group(1))  # type: ignore[union-attr]
    assert (await client.get(url, headers={**STATUS, "If-None-Match": etag})).status_code == 304
    log = await client.get(f"{url}?state=MSG_SENT", headers=LOG)
    assert log.text.lstrip().startswith('<section id="message-list"') and len(MESSAGE_ROW.findall(log.text)) == 2
    assert "No messages match" in (await client.get(f"{url}?state=MSG_FAILED", headers=LOG)).text

    async with world.sessions() as session:  # the rest is sent, the blast completes
        await session.execute(
            update(Message)
            .where(Message.blast_id == blast.id)
            .values(state=MessageState.SENT, updated_at=datetime.now(UTC))
        )
        await session.execute(
            update(Blast).where(Blast.id == blast.id).values(state=BlastState.COMPLETED, completed_at=datetime.now(UTC))
        )
        await session.commit()
    final = await client.get(url, headers={**STATUS, "If-None-Match": etag})
    assert final.status_code == 200 and 'data-blast-state="completed"' in final.text
    assert 'data-progress="100"' in final.text and 'data-stat="MSG_SENT">4<' in final.text
    assert "hx-trigger" not in final.text and "Cancel blast" not in final.text  # ended: polling stops
    page = await client.get(url)
    assert 'hx-trigger="every' not in page.text  # nor does the message list poll an ended blast
