"""The two-way pages (issue 9, item 8): the hook URL and the Telegram webhook on the services pages, a
contact's Telegram link (API and page), org-admin opt-out/in, opted-out badges, the live conversation
with its reply box, and the message log's direction filter."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.clock import utcnow
from app.config import Settings
from app.contacts.links import link_token
from app.contacts.models import Contact
from app.messaging.models import Direction, Message, MessageState, Servicechain
from app.tenants.models import Organization, Role
from tests.conftest import World, bearer
from tests.providers.telegram_api import BOT, BOT_TOKEN, TelegramServer
from tests.test_web_messaging import HX, add_chain, add_contact, hx_post
from tests.test_web_pages import login, post_form

Client = AsyncTestClient[Litestar]
PUBLIC = "http://testserver.local"
API = "/api/v1"
CONVERSATION = {**HX, "HX-Target": "conversation"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The public URL the test client calls (what providers sign), own queues, local providers allowed."""
    return dataclasses.replace(
        settings,
        server=dataclasses.replace(settings.server, public_url=PUBLIC),
        redis=dataclasses.replace(settings.redis, queue_prefix=f"tp{uuid.uuid4().hex[:10]}"),
        security=dataclasses.replace(settings.security, allow_private_targets=True),
    )


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        yield server


async def api_headers(world: World, user: Any) -> dict[str, str]:
    return bearer(await world.token(user))


async def telegram_credentials(client: Client, world: World, org: Organization, telegram: TelegramServer) -> None:
    admin = await world.user(org, Role.ORG_ADMIN)
    body = {"bot_token": BOT_TOKEN, "api_base": telegram.base_url}
    r = await client.put(f"{API}/services/telegram/credentials", json=body, headers=await api_headers(world, admin))
    assert r.status_code in (200, 204), r.text


async def add_message(world: World, contact: Contact, direction: Direction, content: str, **fields: Any) -> Message:
    state = MessageState.RECEIVED if direction == Direction.INCOMING else MessageState.SENT
    async with world.sessions() as session:
        message = Message(
            organization_id=contact.organization_id,
            contact_id=contact.id,
            direction=direction,
            state=fields.pop("state", state),
            content=content,
            service=fields.pop("service", "twilio"),
            **fields,
        )
        session.add(message)
        await session.commit()
        return message


# ---------------------------------------------------------------- services: hook URL and webhook


async def test_services_pages_show_the_twilio_hook_url_and_the_telegram_webhook(
    client: Client, world: World, telegram: TelegramServer
) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    await login(client, admin.email)
    hook = f"{PUBLIC}/hooks/twilio/{org.id}"
    twilio = await client.get("/services/twilio")
    assert twilio.status_code == 200
    assert f'value="{hook}"' in twilio.text and "A message comes in" in twilio.text
    assert 'data-copy="#twilio-hook-url"' in twilio.text
    assert hook in (await client.get("/services")).text

    # the telegram form asks for the token and the API base only: generated fields are never inputs
    form = await client.get("/services/telegram")
    for generated in ("webhook_secret", "webhook_url", "bot_username"):
        assert f'name="{generated}"' not in form.text
    assert 'name="bot_token"' in form.text and 'data-testid="telegram-webhook"' not in form.text
    saved = await post_form(
        client,
        "/services/telegram/credentials",
        {"bot_token": BOT_TOKEN, "api_base": telegram.base_url},
        page="/services/telegram",
    )
    assert saved.status_code == 303, saved.text
    assert telegram.webhook is not None
    page = await client.get("/services/telegram")
    registered = f"{PUBLIC}/hooks/telegram/{org.id}"
    assert telegram.webhook.url == registered
    assert f'data-testid="telegram-webhook-url">{registered}<' in page.text
    assert f"@{BOT['username']}" in page.text
    assert telegram.webhook.secret_token not in page.text and BOT_TOKEN not in page.text
    for generated in ("webhook_secret", "webhook_url", "bot_username"):
        assert f'name="{generated}"' not in page.text


# ---------------------------------------------------------------- telegram link


async def test_telegram_link_on_the_api_and_the_contact_page(
    client: Client, world: World, telegram: TelegramServer, settings: Settings
) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    headers = await api_headers(world, user)
    contact = await add_contact(world, org)
    url = f"{API}/contacts/{contact.id}"
    assert (await client.get(url, headers=headers)).json()["telegram_link"] is None  # no bot yet
    await login(client, user.email)
    assert 'data-testid="telegram-link"' not in (await client.get(f"/contacts/{contact.id}")).text

    await telegram_credentials(client, world, org, telegram)
    token = link_token(settings.security.secret_key, org.id, contact.id)
    expected = f"https://t.me/{BOT['username']}?start={token}"
    body = (await client.get(url, headers=headers)).json()
    assert body["telegram_link"] == expected
    listed = (await client.get(f"{API}/contacts", headers=headers)).json()["items"]
    assert [c["id"] for c in listed] == [str(contact.id)]
    page = await client.get(f"/contacts/{contact.id}")
    assert f'value="{expected}"' in page.text and 'data-copy="#telegram-link"' in page.text
    assert "press Start" in page.text

    # the link from the page works: Telegram's /start <token> ties that chat to this contact
    assert (await telegram.update(555001, f"/start {token}").post(client)).status_code == 200
    assert (await client.get(url, headers=headers)).json()["telegram_chat_id"] == "555001"

    # another organization's contact: 404, and its own link (if any) is not this one
    other = await world.org()
    stranger = await add_contact(world, other)
    assert (await client.get(f"{API}/contacts/{stranger.id}", headers=headers)).status_code == 404
    assert (await client.get(f"/contacts/{stranger.id}")).status_code == 404


# ---------------------------------------------------------------- opt-out / opt-in


async def test_org_admins_opt_contacts_out_and_in_on_the_api(client: Client, world: World) -> None:
    org = await world.org()
    admin, user = await world.user(org, Role.ORG_ADMIN), await world.user(org, Role.USER)
    contact = await add_contact(world, org)
    as_admin, as_user = await api_headers(world, admin), await api_headers(world, user)
    out, back = f"{API}/contacts/{contact.id}/opt-out", f"{API}/contacts/{contact.id}/opt-in"

    assert (await client.post(out, headers=as_user)).status_code == 403
    r = await client.post(out, headers=as_admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["opted_out"] is True and body["opted_out_at"] and body["opted_out_via"] is None
    again = await client.post(out, headers=as_admin)  # repeating keeps the original time
    assert again.json()["opted_out_at"] == body["opted_out_at"]
    # a regular user may not opt someone back in
    assert (await client.post(back, headers=as_user)).status_code == 403
    assert (await client.get(f"{API}/contacts/{contact.id}", headers=as_user)).json()["opted_out"] is True
    r = await client.post(back, headers=as_admin)
    assert r.status_code == 200 and r.json()["opted_out"] is False and r.json()["opted_out_at"] is None

    # another organization's admin: 404 and nothing changes; an unknown id: 404
    other_admin = await world.user(await world.org(), Role.ORG_ADMIN)
    as_other = await api_headers(world, other_admin)
    assert (await client.post(out, headers=as_other)).status_code == 404
    assert (await client.post(f"{API}/contacts/{uuid.uuid4()}/opt-out", headers=as_admin)).status_code == 404
    async with world.sessions() as session:
        row = await session.get(Contact, contact.id)
        assert row is not None and not row.opted_out
    # an admin's token narrowed to the contact scopes lacks users:admin: refused
    narrowed = bearer(await world.token(admin, ["contacts:read", "contacts:write"]))
    assert (await client.post(out, headers=narrowed)).status_code == 403


async def test_org_admins_opt_contacts_out_and_in_on_the_page(client: Client, world: World) -> None:
    org = await world.org()
    admin, user = await world.user(org, Role.ORG_ADMIN), await world.user(org, Role.USER)
    contact = await add_contact(world, org)
    page = f"/contacts/{contact.id}"

    await login(client, user.email)
    shown = await client.get(page)
    assert f'action="{page}/opt-out"' not in shown.text and f'action="{page}/opt-in"' not in shown.text
    assert (await post_form(client, f"{page}/opt-out", {}, page=page)).status_code == 403
    await post_form(client, "/logout", {}, page="/")

    await login(client, admin.email)
    shown = await client.get(page)
    assert f'action="{page}/opt-out"' in shown.text and "hx-confirm=" in shown.text
    done = await post_form(client, f"{page}/opt-out", {}, page=page)
    assert done.status_code == 303 and done.headers["location"] == page
    shown = await client.get(page)
    assert "is opted out" in shown.text and 'data-testid="opted-out"' in shown.text
    assert f'action="{page}/opt-in"' in shown.text
    async with world.sessions() as session:
        row = await session.get(Contact, contact.id)
        assert row is not None and row.opted_out and row.opted_out_via is None
    await post_form(client, "/logout", {}, page="/")

    # the user cannot opt them back in on the page either: not with the button, not by editing
    await login(client, user.email)
    assert (await post_form(client, f"{page}/opt-in", {}, page=page)).status_code == 403
    edit = await client.get(f"{page}/edit")
    assert "Only an organization admin can opt them back in." in edit.text
    saved = await post_form(
        client, f"{page}/edit", {"first_name": "Steven", "email": "steve@example.com"}, page=f"{page}/edit"
    )
    assert saved.status_code == 303
    async with world.sessions() as session:
        row = await session.get(Contact, contact.id)
        assert row is not None and row.first_name == "Steven" and row.opted_out
    await post_form(client, "/logout", {}, page="/")

    await login(client, admin.email)
    assert (await post_form(client, f"{page}/opt-in", {}, page=page)).status_code == 303
    assert "is opted back in" in (await client.get(page)).text
    stranger = await add_contact(world, await world.org())
    assert (await post_form(client, f"/contacts/{stranger.id}/opt-out", {}, page=page)).status_code == 404


async def test_opted_out_contacts_are_marked_everywhere(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    gone = await add_contact(
        world, org, first_name="Olive", opted_out=True, opted_out_at=utcnow(), opted_out_via="twilio"
    )
    await add_contact(world, org, first_name="Stay", email="stay@example.com")
    await add_message(world, gone, Direction.INCOMING, "STOP")
    await login(client, user.email)
    badge = 'data-testid="opted-out"'

    listing = await client.get("/contacts")
    row = re.search(rf'<tr id="contact-{gone.id}">.*?</tr>', listing.text, re.S)
    assert row and badge in row.group(0)
    assert listing.text.count(badge) == 1  # only Olive
    detail = await client.get(f"/contacts/{gone.id}")
    assert badge in detail.text and 'data-testid="conversation-opted-out"' in detail.text
    fragment = await client.get(f"/contacts/{gone.id}", headers=CONVERSATION)
    assert fragment.text.lstrip().startswith('<section id="conversation"') and badge in fragment.text
    log = await client.get("/messages")
    assert badge in log.text
    message = (await client.get("/messages?direction=incoming", headers={**HX, "HX-Target": "message-list"})).text
    assert badge in message
    options = await client.get("/messages/contact-options?contact_q=Olive")
    assert "Olive" in options.text and "(opted out)" in options.text
    compose = await client.get(f"/messages/new?contact_id={gone.id}")
    assert "(opted out)" in compose.text
    preview = await hx_post(
        client, "/messages/preview", {"contact_id": str(gone.id), "content": "Hi"}, page="/messages/new"
    )
    assert badge in preview.text and "will fail" in preview.text


# ---------------------------------------------------------------- the message log: direction


async def test_message_log_filters_by_direction(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    contact = await add_contact(world, org)
    sent = await add_message(world, contact, Direction.OUTGOING, "Are you coming?")
    got = await add_message(world, contact, Direction.INCOMING, "Yes, see you there")
    other = await add_contact(world, await world.org())
    await add_message(world, other, Direction.INCOMING, "Not yours")
    await login(client, user.email)

    incoming = await client.get("/messages?direction=incoming")
    assert f"message-{got.id}" in incoming.text and f"message-{sent.id}" not in incoming.text
    assert "Not yours" not in incoming.text
    assert '<option value="incoming" selected' in incoming.text
    outgoing = await client.get("/messages?direction=outgoing", headers={**HX, "HX-Target": "message-list"})
    assert outgoing.text.lstrip().startswith('<section id="message-list"')
    assert f"message-{sent.id}" in outgoing.text and f"message-{got.id}" not in outgoing.text
    both = await client.get("/messages?direction=sideways")  # unknown: both directions
    assert both.status_code == 200 and f"message-{sent.id}" in both.text and f"message-{got.id}" in both.text

    headers = await api_headers(world, user)
    api = (await client.get(f"{API}/messages?direction=incoming", headers=headers)).json()
    assert [m["id"] for m in api["items"]] == [str(got.id)]
    api = (await client.get(f"{API}/messages?direction=outgoing", headers=headers)).json()
    assert [m["id"] for m in api["items"]] == [str(sent.id)]
    assert (await client.get(f"{API}/messages?direction=sideways", headers=headers)).status_code == 400


# ---------------------------------------------------------------- the conversation and the reply box


async def test_conversation_polls_on_its_newest_page_only(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    contact = await add_contact(world, org)
    start = utcnow() - timedelta(hours=1)
    async with world.sessions() as session:
        for i in range(52):
            direction = Direction.INCOMING if i % 2 else Direction.OUTGOING
            state = MessageState.RECEIVED if i % 2 else MessageState.DELIVERED_USER
            session.add(
                Message(
                    organization_id=org.id,
                    contact_id=contact.id,
                    direction=direction,
                    state=state,
                    content=f"line {i}",
                    created_at=start + timedelta(seconds=i),
                )
            )
        await session.commit()
    await login(client, user.email)
    page = await client.get(f"/contacts/{contact.id}")
    # the newest page (newest at the bottom), polling itself while open; no inline script
    assert 'hx-trigger="every 2s"' in page.text and f'hx-get="/contacts/{contact.id}"' in page.text
    assert "line 51" in page.text and "line 0<" not in page.text and "line 49<" not in page.text
    assert page.text.index("line 50<") < page.text.index("line 51<")
    assert 'data-state="MSG_DELIVERED_USER"' in page.text and 'data-state="MSG_RECEIVED"' in page.text
    assert "<script>" not in page.text and " onclick=" not in page.text
    older = await client.get(f"/contacts/{contact.id}?page=1", headers=CONVERSATION)
    assert "line 0<" in older.text and "every 2s" not in older.text
    newest = await client.get(f"/contacts/{contact.id}", headers=CONVERSATION)
    assert newest.text.lstrip().startswith('<section id="conversation"') and "every 2s" in newest.text


async def test_reply_box_sends_through_the_chain_with_reply_to(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    default = await add_chain(world, org, ["log"], "Org default")
    async with world.sessions() as session:
        await session.execute(
            update(Organization).where(Organization.id == org.id).values(default_servicechain_id=default.id)
        )
        await session.commit()
    own = await add_chain(world, org, ["log"], "Contact's own")
    contact = await add_contact(world, org)
    with_chain = await add_contact(world, org, first_name="Chained", email="c@example.com", servicechain_id=own.id)
    first = await add_message(world, contact, Direction.INCOMING, "Hello?", created_at=utcnow() - timedelta(minutes=5))
    latest = await add_message(
        world, contact, Direction.INCOMING, "Anyone there?", created_at=utcnow() - timedelta(minutes=1)
    )
    page = f"/contacts/{contact.id}"
    await login(client, user.email)
    shown = await client.get(page)
    assert f'hx-post="{page}/reply"' in shown.text and 'id="reply-key"' in shown.text

    answer = await hx_post(
        client, f"{page}/reply", {"content": "Yes, here!", "idempotency_key": "k-1"}, page=page, target="conversation"
    )
    assert answer.status_code == 200, answer.text
    assert answer.text.lstrip().startswith('<section id="conversation"') and "Yes, here!" in answer.text
    assert 'id="reply-key"' in answer.text and 'hx-swap-oob="true"' in answer.text  # a new key for the next
    async with world.sessions() as session:
        replies = list(
            await session.scalars(
                select(Message).where(Message.contact_id == contact.id, Message.direction == Direction.OUTGOING)
            )
        )
    assert len(replies) == 1
    [reply] = replies
    assert reply.reply_to_id == latest.id and reply.reply_to_id != first.id
    assert reply.servicechain_id == default.id and reply.content == "Yes, here!"
    # the same form sent twice: one message
    again = await hx_post(
        client, f"{page}/reply", {"content": "Yes, here!", "idempotency_key": "k-1"}, page=page, target="conversation"
    )
    assert again.status_code == 200 and "already sent" in again.text
    async with world.sessions() as session:
        count = len(list(await session.scalars(select(Message.id).where(Message.direction == Direction.OUTGOING))))
    assert count == 1

    # a contact with its own chain, and no incoming message: that chain, no reply_to (a plain form post)
    done = await post_form(
        client, f"/contacts/{with_chain.id}/reply", {"content": "News"}, page=f"/contacts/{with_chain.id}"
    )
    assert done.status_code == 303 and done.headers["location"] == f"/contacts/{with_chain.id}"
    async with world.sessions() as session:
        news = await session.scalar(select(Message).where(Message.contact_id == with_chain.id))
    assert news is not None and news.servicechain_id == own.id and news.reply_to_id is None

    # an empty reply is refused with a readable message; another organization's contact is 404
    empty = await hx_post(client, f"{page}/reply", {"content": "   "}, page=page, target="conversation")
    assert empty.status_code == 200 and empty.headers.get("HX-Retarget") == "#flashes"
    assert "Write the message." in empty.text
    stranger = await add_contact(world, await world.org())
    foreign = await hx_post(client, f"/contacts/{stranger.id}/reply", {"content": "Hi"}, page=page)
    assert foreign.status_code == 404
    async with world.sessions() as session:
        assert await session.scalar(select(Message).where(Message.contact_id == stranger.id)) is None


async def test_reply_without_any_chain_is_refused_readably(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    contact = await add_contact(world, org)
    await login(client, user.email)
    page = f"/contacts/{contact.id}"
    refused = await hx_post(client, f"{page}/reply", {"content": "Hello"}, page=page, target="conversation")
    assert refused.status_code == 200 and refused.headers.get("HX-Retarget") == "#flashes"
    assert "servicechain" in refused.text.lower()
    plain = await post_form(client, f"{page}/reply", {"content": "Hello"}, page=page)
    assert plain.status_code == 303 and plain.headers["location"] == page
    async with world.sessions() as session:
        assert await session.scalar(select(Message).where(Message.contact_id == UUID(str(contact.id)))) is None
        assert (await session.scalar(select(Servicechain).where(Servicechain.organization_id == org.id))) is None
