"""Issue 10 item 6 in a real browser: an org admin creates a blast from the page for a category of 20
contacts through the chain [log] — the live preview and the audience count follow the form as it is
filled in — lands on the blast's page, and watches its progress bar reach 100% without a reload (a real
worker fans it out and sends it). Any CSP violation fails the test (the ``context`` fixture)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import Server
from e2e.helpers import import_contacts, new_chain, new_organization, sign_in_as
from e2e.test_foundation import PHONE, WIDER_THAN_VIEWPORT, shot
from e2e.test_messaging import settled

pytestmark = pytest.mark.e2e

AUDIENCE = 20


def test_create_a_blast_and_watch_it_complete(page: Page, server: Server, artifacts: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    admin = new_organization(page, server, tag, f"Blast Co {tag}", "Bea Admin")
    sign_in_as(page, admin)
    new_chain(page, "Log only", ["log"])
    rows = [f"Reader{i:02d},Smith,reader{i:02d}-{tag}@news.example,Newsletter," for i in range(AUDIENCE)]
    rows.append(f"Quiet,Jones,quiet-{tag}@news.example,Newsletter,true")  # opted out: counted apart, skipped
    import_contacts(page, "first_name,surname,email,categories,opted_out\n" + "\n".join(rows) + "\n", AUDIENCE + 1)

    # --- The blasts list is empty and says what to do; the create page.
    page.get_by_role("link", name="Blasts", exact=True).first.click()
    expect(page.get_by_test_id("blasts-empty")).to_be_visible()
    page.get_by_role("button", name="Create your first blast").click()
    expect(page.get_by_role("heading", name="New blast")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Spring newsletter")
    page.get_by_label("Servicechain").select_option(label="Log only")
    content = page.get_by_label("Message")
    content.fill("Hello {{ nickname }}")
    expect(page.locator("#blast-preview")).to_contain_text("Unknown template variable(s): nickname")
    content.fill("Hello {{ first_name }}, spring is here.")
    page.get_by_label("Newsletter").check()
    audience = page.get_by_test_id("blast-audience")
    expect(audience.get_by_test_id("audience-count")).to_have_text(str(AUDIENCE))
    expect(audience.get_by_test_id("audience-skipped")).to_have_text("1")
    sample = re.compile(r"^Hello Reader\d\d, spring is here\.$")  # the first member (in the fan-out's order)
    expect(page.get_by_test_id("blast-preview-text")).to_have_text(sample)
    shot(page, artifacts, "60-blast-new")

    # --- Create it: the blast's page follows it to the end without reloading.
    page.get_by_role("button", name="Create blast").click()
    expect(page.get_by_role("heading", name="Spring newsletter")).to_be_visible()
    expect(page.get_by_text(f"accepted for {AUDIENCE} contact(s)")).to_be_visible()
    assert "/blasts/" in page.url
    page.evaluate("window.__stillTheSamePage = true")  # gone if the page reloads
    status = page.locator("#blast-status")
    expect(status.locator("[data-blast-state='completed']")).to_be_visible(timeout=60_000)
    expect(status.locator(".blast-progress")).to_have_attribute("data-progress", "100")
    expect(status.locator("[data-stat='MSG_SENT']")).to_have_text(str(AUDIENCE))
    expect(status.locator("[data-stat='skipped_opted_out']")).to_have_text("1")
    assert page.evaluate("() => document.querySelector('#blast-status progress').value") == AUDIENCE
    expect(page.locator("#message-list tr[id^='message-']")).to_have_count(AUDIENCE, timeout=15_000)
    settled(page)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
    expect(status).not_to_have_attribute("hx-trigger", "every 1s")  # polling stopped once it ended
    shot(page, artifacts, "61-blast-completed")
    page.set_viewport_size(PHONE)  # responsive: nothing wider than a phone's screen
    width, wide = page.evaluate(WIDER_THAN_VIEWPORT)
    assert width <= PHONE["width"], wide
    shot(page, artifacts, "61-blast-completed-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    # --- The list shows it completed, with its progress bar.
    page.get_by_role("link", name="Blasts", exact=True).first.click()
    row = page.locator("tr", has_text="Spring newsletter")
    expect(row.locator("[data-blast-state='completed']")).to_be_visible()
    expect(row.locator(".blast-progress")).to_have_attribute("data-progress", "100")
    width, wide = page.evaluate(WIDER_THAN_VIEWPORT)  # the navigation of an org admin fits a laptop's screen
    assert width <= 1280, wide
    shot(page, artifacts, "62-blast-list")
