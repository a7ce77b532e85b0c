"""The dashboard's figures and ``GET /api/v1/stats``: messages in several states across days, services and
chains are written as rows; every figure must equal what this test counts itself over the rows it wrote.
The API and the page show the same numbers; an organization never sees another's; a sysadmin sees the
instance, or one organization by ``organization_id``."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.contacts.models import Contact
from app.messaging.models import (
    Attempt,
    AttemptOutcome,
    CreditState,
    Direction,
    Message,
    MessageState,
    Servicechain,
)
from app.messaging.stats import Stats, Window
from app.tenants.models import Organization, Plan, Role
from tests.conftest import World, bearer
from tests.test_web_pages import login

Client = AsyncTestClient[Litestar]
S = MessageState
O = AttemptOutcome  # noqa: E741
DELIVERED = {S.DELIVERED_SERVICE, S.DELIVERED_USER, S.READ, S.REPLIED}
CHAINS = {"Fast": ["sms_a", "sms_b"], "Chat": ["tg"]}


@dataclass
class Row:
    created_at: datetime
    state: MessageState
    direction: Direction = Direction.OUTGOING
    service: str | None = None
    chain: str | None = None
    attempts: list[tuple[str, AttemptOutcome]] = field(default_factory=list)
    credit: CreditState = CreditState.NONE
    sent_at: datetime | None = None
    org: str = ""


@dataclass
class Built:
    org: Organization
    rows: list[Row]
    chain_ids: dict[str, uuid.UUID]
    #: the id of each row's message, in the order of ``rows``
    ids: list[uuid.UUID] = field(default_factory=list)


def plan_rows(rng: random.Random, now: datetime, count: int) -> list[Row]:
    rows = []
    for _ in range(count):
        # k whole days and 1..6 hours back: never on the 7-day boundary, whatever second "until" is
        created = now - timedelta(days=rng.randrange(0, 12), hours=rng.randrange(1, 7), minutes=rng.randrange(60))
        if rng.random() < 0.15:
            rows.append(Row(created, S.RECEIVED, Direction.INCOMING, service="tg"))
            continue
        chain = rng.choice(list(CHAINS))
        route = CHAINS[chain]
        attempts: list[tuple[str, AttemptOutcome]] = []
        for seq, service in enumerate(route):
            outcome = rng.choice([O.SENT, O.SENT, O.FAILED, O.UNDELIVERED, O.PENDING])
            attempts.append((service, outcome))
            if outcome in (O.SENT, O.PENDING) or seq == len(route) - 1:
                break
        last_service, last = attempts[-1]
        if last == O.SENT:
            state = rng.choice([S.SENT, S.DELIVERED_SERVICE, S.DELIVERED_USER, S.READ, S.REPLIED])
            credit, sent_at = CreditState.CHARGED, created + timedelta(minutes=1)
        elif last == O.PENDING:
            state, credit, sent_at = S.SENDING, CreditState.RESERVED, None
        else:
            state, credit, sent_at = S.FAILED, CreditState.RELEASED, None
        rows.append(Row(created, state, Direction.OUTGOING, last_service, chain, attempts, credit, sent_at))
    # one old message (outside the 30 days) that must count nowhere
    rows.append(Row(now - timedelta(days=40), S.SENT, service="sms_a", chain="Fast", attempts=[("sms_a", O.SENT)]))
    return rows


async def build(sessions: async_sessionmaker[AsyncSession], world: World, seed: int, count: int = 60) -> Built:
    org = await world.org(plan=Plan.PAY_IN_ADVANCE, credits=500, credits_reserved=4)
    rows = plan_rows(random.Random(seed), utcnow(), count)
    async with sessions() as session:
        contact = Contact(organization_id=org.id, first_name="Ann", email=f"ann-{seed}@example.com")
        chains = {
            name: Servicechain(organization_id=org.id, name=name, services=route) for name, route in CHAINS.items()
        }
        session.add_all([contact, *chains.values()])
        await session.flush()
        ids = []
        for row in rows:
            message = Message(
                organization_id=org.id,
                contact_id=contact.id,
                servicechain_id=chains[row.chain].id if row.chain else None,
                direction=row.direction,
                state=row.state,
                service=row.service,
                route=CHAINS.get(row.chain or "", []),
                content="hello",
                credit=row.credit,
                sent_at=row.sent_at,
                created_at=row.created_at,
                updated_at=row.created_at,
            )
            session.add(message)
            await session.flush()
            ids.append(message.id)
            for seq, (service, outcome) in enumerate(row.attempts):
                session.add(
                    Attempt(
                        organization_id=org.id,
                        message_id=message.id,
                        seq=seq,
                        service=service,
                        outcome=outcome,
                        started_at=row.created_at + timedelta(seconds=seq),
                    )
                )
        await session.commit()
        return Built(org, rows, {name: chain.id for name, chain in chains.items()}, ids)


def expected(rows: list[Row], window: Window) -> dict[str, Any]:
    """The figures, counted here in Python over the rows written (the definitions of app/messaging/stats.py)."""
    inside = [r for r in rows if window.since <= r.created_at < window.until]
    recent = window.recent
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for r in inside:
        per_day[r.created_at.date().isoformat()][str(r.state)] += 1
    services: dict[str, Counter[str]] = defaultdict(Counter)
    chains: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        for seq, (service, outcome) in enumerate(r.attempts):
            if recent.since <= r.created_at + timedelta(seconds=seq) < recent.until:
                services[service][outcome.value] += 1
        in_recent = recent.since <= r.created_at < recent.until
        if in_recent and r.state in DELIVERED and r.service:
            services[r.service]["delivered"] += 1
        if in_recent and r.chain and r.attempts:
            chains[r.chain]["messages"] += 1
            chains[r.chain]["fell_back"] += r.attempts[0][1] in (O.FAILED, O.UNDELIVERED)
    spent: Counter[str] = Counter()
    for r in rows:
        if r.credit == CreditState.CHARGED and r.sent_at and window.since <= r.sent_at < window.until:
            spent[r.sent_at.date().isoformat()] += 1
    replies = sorted((r for r in rows if r.direction == Direction.INCOMING), key=lambda r: r.created_at, reverse=True)
    return {
        "per_day": {d: dict(c) for d, c in per_day.items()},
        "services": {
            s: {k: c[k] for k in ("sent", "failed", "undelivered", "pending", "delivered")} for s, c in services.items()
        },
        "chains": {name: (c["messages"], c["fell_back"]) for name, c in chains.items()},
        "spent": dict(spent),
        "replies": [r.created_at for r in replies[:10]],
        "total": len(inside),
    }


def figures_of(figures: Any) -> dict[str, Any]:
    return {
        "per_day": {d: s for d, s in figures.per_day.items() if s},
        "services": {
            s.service: {
                "sent": s.sent,
                "failed": s.failed,
                "undelivered": s.undelivered,
                "pending": s.pending,
                "delivered": s.delivered,
            }
            for s in figures.services
        },
        "chains": {c.name: (c.messages, c.fell_back) for c in figures.chains},
        "spent": {d: n for d, n in figures.credits.spent_per_day.items() if n},
        "replies": [r.created_at for r in figures.latest_replies],
        "total": figures.total,
    }


def api_of(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "per_day": {d["day"]: d["states"] for d in body["messages_per_day"] if d["states"]},
        "services": {
            s["service"]: {k: s[k] for k in ("sent", "failed", "undelivered", "pending", "delivered")}
            for s in body["services"]
        },
        "chains": {c["name"]: (c["messages"], c["fell_back"]) for c in body["servicechains"]},
        "spent": {d["day"]: d["spent"] for d in body["credits"]["spent_per_day"] if d["spent"]},
        "total": body["total"],
    }


async def test_figures_equal_the_counts_of_the_rows(sessions: async_sessionmaker[AsyncSession], world: World) -> None:
    built = await build(sessions, world, seed=1)
    other = await build(sessions, world, seed=2, count=25)  # another organization: counts nowhere above
    window = Window.parse()
    async with sessions() as session:
        figures = await Stats(session=session, organization_id=built.org.id).figures(window)
    want = expected(built.rows, window)
    got = figures_of(figures)
    assert {k: v for k, v in got.items() if k != "replies"} == {k: v for k, v in want.items() if k != "replies"}
    assert [t.replace(microsecond=0) for t in got["replies"]] == [t.replace(microsecond=0) for t in want["replies"]]
    assert figures.credits is not None and figures.credits.left == 500 - 4 and figures.credits.reserved == 4
    assert want["total"] > 30 and want["services"] and want["chains"]  # the data exercises every figure
    # delivery and fallback rates are the ratios of those counts
    for s in figures.services:
        assert s.delivery_rate == (round(s.delivered / s.attempts, 4) if s.attempts else None)
    for c in figures.chains:
        assert c.fallback_rate == round(c.fell_back / c.messages, 4)
    # the instance: both organizations together
    async with sessions() as session:
        instance = await Stats.instance(session).figures(window)
    both = expected(built.rows + other.rows, window)
    assert figures_of(instance)["per_day"] == both["per_day"] and instance.total == both["total"]
    assert figures_of(instance)["services"] == both["services"]
    assert instance.credits is not None and instance.credits.spent == sum(both["spent"].values())


async def test_api_and_dashboard_show_the_same_numbers(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    built = await build(sessions, world, seed=3)
    await build(sessions, world, seed=4, count=20)
    user = await world.user(built.org, Role.USER)
    token = await world.token(user, ["messages:read"])
    answer = await client.get("/api/v1/stats", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    window = Window(datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"]))
    want = expected(built.rows, window)
    assert api_of(body) == {k: v for k, v in want.items() if k != "replies"}
    assert body["organization_id"] == str(built.org.id) and body["credits"]["left"] == 496

    # the dashboard (the home page) shows the same figures
    assert (await login(client, user.email)).status_code == 303
    home = await client.get("/")
    assert home.status_code == 200
    html = home.text
    assert 'data-chart="messages-per-day"' in html and 'data-etag="' in html
    assert re.search(r'data-stat="total">(\d+)<', html).group(1) == str(body["total"])  # type: ignore[union-attr]
    for day in body["messages_per_day"]:
        if not day["states"]:
            assert f'data-day="{day["day"]}"><th' not in html
            continue
        row = re.search(rf'<tr data-day="{day["day"]}"><th scope="row">.*?</tr>', html, re.S)
        assert row, day
        cells = dict(re.findall(r'<td data-state="(MSG_\w+)">(\d+)</td>', row.group(0)))
        assert {k: int(v) for k, v in cells.items() if int(v)} == day["states"]
    for s in body["services"]:
        row = re.search(rf'<tr data-service="{s["service"]}">.*?</tr>', html, re.S)
        assert row, s
        cells = dict(re.findall(r'data-stat="(\w+)">([^<]+)</td>', row.group(0)))
        assert [int(cells[k]) for k in ("attempts", "sent", "delivered", "failed", "undelivered")] == [
            s[k] for k in ("attempts", "sent", "delivered", "failed", "undelivered")
        ]
    for c in body["servicechains"]:
        row = re.search(rf'<tr data-chain="{c["servicechain_id"]}">.*?</tr>', html, re.S)
        assert row and f'data-stat="fell_back">{c["fell_back"]}<' in row.group(0)
    assert f'data-stat="credits-left">{body["credits"]["left"]}<' in html
    assert f'data-stat="credits-spent">{body["credits"]["spent"]}<' in html


async def test_cross_tenant_and_sysadmin(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    mine = await build(sessions, world, seed=5, count=15)
    theirs = await build(sessions, world, seed=6, count=15)
    member = await world.token(await world.user(mine.org, Role.ORG_ADMIN))
    own = (await client.get("/api/v1/stats", headers=bearer(member))).json()
    window = Window(datetime.fromisoformat(own["since"]), datetime.fromisoformat(own["until"]))
    assert own["total"] == expected(mine.rows, window)["total"]
    assert str(theirs.chain_ids["Fast"]) not in str(own)  # not even another organization's chain ids
    # naming another organization: 404; a token without messages:read: 403
    foreign = await client.get(f"/api/v1/stats?organization_id={theirs.org.id}", headers=bearer(member))
    assert foreign.status_code == 404
    narrow = await world.token(await world.user(mine.org, Role.USER), ["contacts:read"])
    assert (await client.get("/api/v1/stats", headers=bearer(narrow))).status_code == 403

    admin = await world.user(None, Role.SYSADMIN)
    sys_token = await world.token(admin)
    instance = (await client.get("/api/v1/stats", headers=bearer(sys_token))).json()
    assert instance["organization_id"] is None
    assert instance["total"] >= expected(mine.rows + theirs.rows, window)["total"]  # other tests' rows too
    one = (await client.get(f"/api/v1/stats?organization_id={theirs.org.id}", headers=bearer(sys_token))).json()
    assert one["total"] == expected(theirs.rows, window)["total"] and one["organization_id"] == str(theirs.org.id)
    unknown = await client.get(f"/api/v1/stats?organization_id={uuid.uuid4()}", headers=bearer(sys_token))
    assert unknown.status_code == 404

    # the sysadmin's dashboard: the whole instance
    assert (await login(client, admin.email)).status_code == 303
    home = await client.get("/")
    assert home.status_code == 200 and "the whole instance" in home.text
    shown = int(re.search(r'data-stat="total">(\d+)<', home.text).group(1))  # type: ignore[union-attr]
    assert shown >= expected(mine.rows + theirs.rows, window)["total"]


@pytest.mark.parametrize(
    "query",
    [
        "granularity=week",
        "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=2020-01-01T00:00:00Z",
        "since=yesterday",
    ],
)
async def test_bad_windows_are_422(client: Client, world: World, query: str) -> None:
    org = await world.org()
    token = await world.token(await world.user(org))
    answer = await client.get(f"/api/v1/stats?{query}", headers=bearer(token))
    assert answer.status_code in (400, 422), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_an_explicit_window(client: Client, sessions: async_sessionmaker[AsyncSession], world: World) -> None:
    built = await build(sessions, world, seed=7, count=30)
    token = await world.token(await world.user(built.org))
    until = utcnow().replace(microsecond=0) - timedelta(days=3)
    since = until - timedelta(days=5)
    q = f"since={since.isoformat().replace('+00:00', 'Z')}&until={until.isoformat().replace('+00:00', 'Z')}"
    body = (await client.get(f"/api/v1/stats?{q}", headers=bearer(token))).json()
    want = expected(built.rows, Window(since, until))
    assert api_of(body) == {k: v for k, v in want.items() if k != "replies"}
    assert [d["day"] for d in body["messages_per_day"]] == Window(since, until).days()


async def test_an_organization_without_messages(client: Client, world: World) -> None:
    org = await world.org(plan=Plan.PAYG)
    user = await world.user(org)
    body = (await client.get("/api/v1/stats", headers=bearer(await world.token(user)))).json()
    assert body["total"] == 0 and body["services"] == [] and body["credits"] is None
    assert len(body["messages_per_day"]) == 31 and body["latest_replies"] == []
    assert (await login(client, user.email)).status_code == 303
    home = await client.get("/")
    assert 'data-testid="stats-empty"' in home.text and "credits-left" not in home.text
