"""Live fragments (decision 0028): the message log, a message's status and the dashboard's figures poll
themselves with the ETag they were rendered with; the server answers 304 while nothing they show changed,
and the new fragment (with a new ETag) once a message changes state or arrives."""

from __future__ import annotations

import html
import re
import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.contacts.models import Contact
from app.messaging import state
from app.messaging.models import Message, MessageState
from app.tenants.models import Organization, Role
from tests.conftest import World
from tests.test_web_pages import login

Client = AsyncTestClient[Litestar]
HX = {"HX-Request": "true"}
ETAG = re.compile(r'data-etag="([^"]+)"')


async def add_message(
    sessions: async_sessionmaker[AsyncSession], org: Organization, state_: MessageState = MessageState.SENDING
) -> uuid.UUID:
    async with sessions() as session:
        contact = Contact(organization_id=org.id, first_name="Ann", email=f"a-{uuid.uuid4().hex[:6]}@example.com")
        session.add(contact)
        await session.flush()
        message = Message(organization_id=org.id, contact_id=contact.id, content="hi", state=state_, route=["log"])
        session.add(message)
        await session.commit()
        return message.id


async def move(sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID, new: MessageState) -> None:
    async with sessions() as session:
        assert await state.move(session, message_id, new)
        await session.commit()


async def poll(client: Client, url: str, target: str, etag: str | None) -> tuple[int, str | None]:
    headers = {**HX, "HX-Target": target, **({"If-None-Match": etag} if etag else {})}
    answer = await client.get(url, headers=headers)
    if answer.status_code == 304:
        assert answer.content == b"" and answer.headers["etag"] == etag
        return 304, etag
    assert answer.status_code == 200, answer.text
    match = ETAG.search(answer.text)
    assert match, answer.text[:300]
    return 200, html.unescape(match.group(1))


async def test_the_message_log_answers_304_until_a_message_changes(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    org = await world.org()
    user = await world.user(org)
    message_id = await add_message(sessions, org)
    assert (await login(client, user.email)).status_code == 303
    page = await client.get("/messages")
    assert 'id="message-list"' in page.text and 'hx-trigger="every 3s"' in page.text
    etag = html.unescape(ETAG.search(page.text).group(1))  # type: ignore[union-attr]
    assert await poll(client, "/messages?page=1", "message-list", etag) == (304, etag)

    await move(sessions, message_id, MessageState.SENT)
    status, new = await poll(client, "/messages?page=1", "message-list", etag)
    assert status == 200 and new != etag
    assert await poll(client, "/messages?page=1", "message-list", new) == (304, new)

    await add_message(sessions, org, MessageState.PENDING)  # a new message: the log changes too
    status, newer = await poll(client, "/messages?page=1", "message-list", new)
    assert status == 200 and newer != new
    # a filter is part of the version: the same ETag under another filter is not "unchanged"
    assert (await poll(client, "/messages?state=MSG_SENT&page=1", "message-list", newer))[0] == 200
    # without If-None-Match, or for the whole page, always the content
    assert (await poll(client, "/messages?page=1", "message-list", None))[0] == 200
    full = await client.get("/messages", headers={"If-None-Match": newer})
    assert full.status_code == 200 and "<html" in full.text


async def test_a_message_status_answers_304_until_it_moves(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    org = await world.org()
    user = await world.user(org)
    message_id = await add_message(sessions, org)
    assert (await login(client, user.email)).status_code == 303
    url = f"/messages/{message_id}"
    status, etag = await poll(client, url, "message-status", None)
    assert status == 200
    assert await poll(client, url, "message-status", etag) == (304, etag)
    await move(sessions, message_id, MessageState.SENT)
    status, new = await poll(client, url, "message-status", etag)
    assert status == 200 and new != etag


async def test_the_dashboard_figures_answer_304_until_something_changes(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    org = await world.org()
    user = await world.user(org)
    message_id = await add_message(sessions, org)
    assert (await login(client, user.email)).status_code == 303
    home = await client.get("/")
    assert 'id="dashboard-stats"' in home.text
    etag = html.unescape(ETAG.search(home.text).group(1))  # type: ignore[union-attr]
    assert await poll(client, "/", "dashboard-stats", etag) == (304, etag)
    await move(sessions, message_id, MessageState.FAILED)
    status, new = await poll(client, "/", "dashboard-stats", etag)
    assert status == 200 and new != etag


async def test_another_organizations_message_is_404_not_304(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mine, theirs = await world.org(), await world.org()
    user = await world.user(mine)
    foreign = await add_message(sessions, theirs)
    assert (await login(client, user.email)).status_code == 303
    answer = await client.get(
        f"/messages/{foreign}", headers={**HX, "HX-Target": "message-status", "If-None-Match": "*"}
    )
    assert answer.status_code == 404
    # and one organization's log version is not another's
    own_log = await client.get("/messages", headers={**HX, "HX-Target": "message-list"})
    other = await world.user(theirs, Role.USER)
    client.cookies.clear()
    assert (await login(client, other.email)).status_code == 303
    etag = html.unescape(ETAG.search(own_log.text).group(1))  # type: ignore[union-attr]
    assert (await poll(client, "/messages?page=1", "message-list", etag))[0] == 200
