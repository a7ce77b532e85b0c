"""Message templates cannot freeze or bloat the process (issue 7, item 1; decision record 0013).

The renderer bounds loop iterations, output size, recursion and the filters and methods a template
may use, and runs in a worker thread: every hostile template is a 422 with its reason on ``content``
(API and compose page), legitimate templates render as before, and ``/health`` of a real server
answers within a second while hostile templates are being refused.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.messaging import templating
from tests.conftest import World
from tests.helpers import free_port, stop_process, worker_env
from tests.pipeline import fast_settings, new_contact, setup_chain, tenant
from tests.test_messages_api import message_count
from tests.test_web_messaging import add_contact, hx_post, member
from tests.test_web_pages import login, post_form

CONTACT = SimpleNamespace(title="Dr", first_name="Steve", surname="Jones")
BIG = "{% set x = 'x' * 9000 %}"  # a value just under the limit, to grow from

#: the reproductions of the issue
NESTED_RANGES = "{% for a in range(20000) %}{% for b in range(20000) %}{% endfor %}{% endfor %}"
HUGE_WIDTH = "{{ '%300000000s' % 'a' }}"
RECURSIVE_MACRO = "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}"
#: m29 calls m28 ... calls m0: no recursion, but 30 deep
MACRO_CHAIN = "".join(f"{{% macro m{i}() %}}{{{{ m{i - 1}() }}}}{{% endmacro %}}" for i in range(1, 30))
MACRO_CHAIN = "{% macro m0() %}x{% endmacro %}" + MACRO_CHAIN + "{{ m29() }}"
#: allowed-looking work that, unbounded, holds a thread for about a minute (10,000 wordwraps of 9,000 characters)
SLOW = "{% set x = 'ab ' * 3000 %}{% for i in range(10000) %}{% if x|wordwrap(10) %}{% endif %}{% endfor %}"
#: items that filters go through count as steps too
SORTS = "{% for i in range(10000) %}{% if range(10000)|list|sort|length %}{% endif %}{% endfor %}"

TOO_MUCH_WORK = "The template does too much work: more than 10000 loop iterations"
TOO_LONG = "The rendered message would exceed 10000 characters"
RECURSE = "Templates may not recurse"

LEGITIMATE = [
    ("Hello {{ first_name }}", "Hello Steve"),
    ("{% for i in range(3) %}{{ i }}, {% endfor %}go", "0, 1, 2, go"),
    ("{{ first_name|default('friend')|upper }}", "STEVE"),
    ("{{ title ~ ' ' ~ surname }}", "Dr Jones"),
    ("{% if first_name %}Hi {{ first_name|lower|capitalize }}{% else %}Hi{% endif %}\n", "Hi Steve\n"),
    ("{% for n in ['a', 'b'] %}{{ loop.index }}{{ n }}{% if not loop.last %}-{% endif %}{% endfor %}", "1a-2b"),
    ("{% macro hi(n) %}Hi {{ n|title }}{% endmacro %}{{ hi(first_name) }}/{{ hi('ann') }}", "Hi Steve/Hi Ann"),
    ("{% set g %}Dear {{ title }}{% endset %}{{ g }} {{ surname|trim }}", "Dear Dr Jones"),
    ("{{ '%s owes %.2f' % (first_name, 3.14159) }} {{ '%s-%s'|format(title, surname) }}", "Steve owes 3.14 Dr-Jones"),
    ("{{ surname.replace('o', '0') }} {{ 'a,b'.split(',')|join('+') }} {{ 'ab'|center(4) }}|", "J0nes a+b  ab |"),
    ("{{ '-' * 3 }}{{ 6 * 7 }}{{ 'x' * 10 ~ 'y' }}", "---42xxxxxxxxxxy"),
    ("{{ 'a long text that goes on'|truncate(12) }} {{ 'aaa bbb'|wordwrap(3) }}", "a long... aaa\nbbb"),
    ("{{ 'x' * 10000 }}", "x" * 10000),
]

HOSTILE = [
    # work: all loops of one render share one budget, not one per range
    (NESTED_RANGES, TOO_MUCH_WORK),
    ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", TOO_MUCH_WORK),
    (BIG + "{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}", TOO_MUCH_WORK),
    (SORTS, TOO_MUCH_WORK),
    (SLOW, "The template takes too long to render (more than 1 s)"),
    # size, refused before the value is built
    (HUGE_WIDTH, TOO_LONG),
    ("{{ '%.300000000f' % 1.0 }}", TOO_LONG),
    ("{{ '%(a(b))300000000s' % {'a(b)': 'x'} }}", TOO_LONG),
    ("{{ '%*s' % (300000000, 'a') }}", "A '*' width or precision in % formatting is not allowed"),
    ("{{ '%300000000s'|format('a') }}", TOO_LONG),
    ("{{ 'a'|center(300000000) }}", "The center width must be a whole number of at most 10000"),
    ("{{ 'a'|indent(300000000) }}", "The indent width must be a whole number of at most 10000"),
    (BIG.replace("'x'", "'\\n'") + "{{ x|indent(5000) }}", TOO_LONG),
    (BIG.replace("'x'", "'x '") + "{{ x|wordwrap(1, wrapstring='y' * 5000) }}", TOO_LONG),
    (BIG + "{{ [x, x]|join }}", TOO_LONG),
    ("{{ range(10000)|join('-' * 100) }}", TOO_LONG),
    (BIG + "{{ x|replace('x', 'yy') }}", TOO_LONG),
    ("{{ 'abc'|replace('', 'z' * 9000) }}", TOO_LONG),
    (BIG + "{{ x.replace('x', 'yy') }}", TOO_LONG),
    (BIG + "{% set y = x ~ x %}", TOO_LONG),
    (BIG + "{% set y = x + x %}", TOO_LONG),
    ("{{ [1, 2] * 100000000 }}", TOO_LONG),
    ("{% for i in range(10000) %}yy{% endfor %}", TOO_LONG),
    ("{% set s %}{% for i in range(10000) %}" + "y" * 100 + "{% endfor %}{% endset %}", "more than 100000 characters"),
    ("{% set a = 10 ** 9 %}", "The ** operator is not allowed"),
    (
        "{% set a = 99999999999999999999 %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}",
        "Numbers this large",
    ),
    ("{% set a = [1, 1] %}{% set b = [a, a] %}{% set c = [b, b] %}", "Lists and dicts in a template may hold only"),
    # string methods outside the allow-list
    ("{{ 'a'.ljust(300000000) }}", "'ljust' is not available in message templates"),
    ("{{ 'a'.rjust(300000000) }}", "'rjust' is not available"),
    ("{{ 'a'.zfill(300000000) }}", "'zfill' is not available"),
    ("{{ 'a'.center(300000000) }}", "'center' is not available"),
    ("{{ '\t'.expandtabs(300000000) }}", "'expandtabs' is not available"),
    ("{{ '{:>300000000}'.format('a') }}", "'format' is not available"),
    ("{% set l = [1] %}{{ l.append(2) }}", "'append' is not available"),
    # filters, tests and tags outside the allow-list (unknown ones answered 500 before)
    ("{{ first_name|nope }}", "Unknown filter 'nope'"),
    ("{{ [1]|batch(100000000, 'x')|list }}", "Unknown filter 'batch'"),
    ("{% if first_name is nope %}{% endif %}", "Unknown test 'nope'"),
    ("{% include 'x' %}", "cannot include other templates"),
    ("{% block b %}x{% endblock %}{{ self.b() }}", "Blocks"),
    ("{{ lipsum(100000) }}", "Unknown template variable(s): lipsum"),
    # recursion (a recursive macro answered 500 before)
    (RECURSIVE_MACRO, RECURSE),
    ("{% macro m() %}{% call m() %}{% endcall %}{% endmacro %}{{ m() }}", RECURSE),
    ("{% for a in [1] recursive %}{{ loop([1]) }}{% endfor %}", RECURSE),
    (MACRO_CHAIN, "may not nest more than 20 deep"),
    # what Python itself refuses is the template's fault too
    ("{% for a in range(1) %}" * 25 + "{% endfor %}" * 25, "nested too deeply"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
    ("{{ 1" + "0" * 5000 + " }}", "Template error"),
    ("{{ first_name ", "Template error on line 1"),
]


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [content[:48] for content, _ in cases]


# ---------------------------------------------------------------- the renderer alone


@pytest.mark.parametrize(("content", "expected"), LEGITIMATE, ids=_ids(LEGITIMATE))
def test_legitimate_templates_render_as_before(content: str, expected: str) -> None:
    assert templating.render(content, CONTACT) == expected


@pytest.mark.parametrize(("content", "reason"), HOSTILE, ids=_ids(HOSTILE))
def test_hostile_templates_are_refused_with_their_reason(content: str, reason: str) -> None:
    with pytest.raises(templating.TemplateProblem) as refused:
        templating.render(content, CONTACT)
    assert reason in str(refused.value)


def test_a_refused_render_leaves_the_next_one_its_whole_budget() -> None:
    with pytest.raises(templating.TemplateProblem):
        templating.render(NESTED_RANGES, CONTACT)
    loops = "{% for a in range(100) %}{% for b in range(99) %}{% endfor %}{% endfor %}done"
    assert templating.render(loops, CONTACT) == "done"  # 9,999 iterations: just within


async def test_render_in_thread_leaves_the_event_loop_free() -> None:
    assert await templating.render_in_thread("Hi {{ first_name }}", CONTACT) == "Hi Steve"  # (anyio's first import)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(templating.TemplateProblem, match="takes too long"):
            await templating.render_in_thread(SLOW, CONTACT)
    finally:
        ticker.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 10 and max(gaps) < 0.5, f"{len(ticks)} ticks, longest gap {max(gaps):.2f} s"


# ---------------------------------------------------------------- the API and the compose page


async def test_api_answers_422_on_content_for_every_hostile_template(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t, title="Dr")
    for content, reason in [c for c in HOSTILE if len(c[0]) <= 10_000]:
        # the content answers first, with a chain and without one (no default chain here either)
        for path, extra in (
            ("/api/v1/messages/preview", {}),
            ("/api/v1/messages", {"servicechain_id": chain}),
            ("/api/v1/messages", {}),
        ):
            r = await client.post(path, json={"contact_id": contact, "content": content, **extra}, headers=t.user)
            assert r.status_code == 422, (path, content, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert reason in body["detail"], (path, content, body)
            assert [e["field"] for e in body["errors"]] == ["content"] and reason in body["errors"][0]["message"]
    assert await message_count(sessions) == 0
    for content, expected in LEGITIMATE:
        r = await client.post(
            "/api/v1/messages/preview", json={"contact_id": contact, "content": content}, headers=t.user
        )
        assert r.status_code == 200 and r.json()["content"] == expected, (content, r.text)


async def test_compose_page_shows_the_reason(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    org, user = await member(world)
    contact = await add_contact(world, org, first_name="Steve")
    await login(client, user.email)
    page = f"/messages/new?contact_id={contact.id}"
    for content, reason in [(NESTED_RANGES, TOO_MUCH_WORK), (HUGE_WIDTH, TOO_LONG), (RECURSIVE_MACRO, RECURSE)]:
        preview = await hx_post(client, "/messages/preview", {"contact_id": str(contact.id), "content": content}, page)
        assert preview.status_code == 200 and "inline-error" in preview.text and reason in preview.text, preview.text
        form = {"contact_id": str(contact.id), "servicechain_id": "", "content": content}
        sent = await post_form(client, "/messages", form, page=page)
        assert sent.status_code == 422 and 'id="e-content"' in sent.text and reason in sent.text
    assert await message_count(sessions) == 0
    ok = await hx_post(client, "/messages/preview", {"contact_id": str(contact.id), "content": LEGITIMATE[2][0]}, page)
    assert "STEVE" in ok.text and "inline-error" not in ok.text


# ---------------------------------------------------------------- a real server stays responsive


@pytest.fixture
def live_server(settings: Settings, engine: Any, tmp_path: Path) -> Iterator[str]:
    """``voluble run`` in its own process, on the test's database and Redis."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
            env=worker_env(fast_settings(settings), VOLUBLE_PUBLIC_URL=url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


async def test_health_answers_within_a_second_while_hostile_templates_are_refused(
    live_server: str, world: World
) -> None:
    t = await tenant(world)
    async with httpx.AsyncClient(base_url=live_server, headers=t.user, timeout=120) as api:
        r = await api.post("/api/v1/contacts", json={"first_name": "Steve", "email": "steve@example.com"})
        assert r.status_code == 201, r.text
        contact = r.json()["id"]

        async def hostile(content: str) -> httpx.Response:
            return await api.post("/api/v1/messages/preview", json={"contact_id": contact, "content": content})

        async def health_while(task: asyncio.Future[Any]) -> list[float]:
            """Ask /health every 50 ms until ``task`` is done; each must answer within 1 s."""
            took: list[float] = []
            async with httpx.AsyncClient(base_url=live_server, timeout=1.0) as probe:
                while not task.done() or not took:
                    start = time.monotonic()
                    try:
                        assert (await probe.get("/health")).status_code == 200
                    except httpx.TimeoutException:
                        pytest.fail(f"/health did not answer within 1 s (after {len(took)} answers)")
                    took.append(time.monotonic() - start)
                    await asyncio.sleep(0.05)
            return took

        refusals = asyncio.gather(hostile(NESTED_RANGES), hostile(HUGE_WIDTH), *(hostile(SLOW) for _ in range(3)))
        took = await health_while(refusals)
        answers = await refusals
    assert [a.status_code for a in answers] == [422] * 5, [a.text for a in answers]
    assert TOO_MUCH_WORK in answers[0].json()["detail"] and TOO_LONG in answers[1].json()["detail"]
    assert all("takes too long" in a.json()["detail"] for a in answers[2:])
    assert len(took) >= 5 and max(took) < 1.0, took
