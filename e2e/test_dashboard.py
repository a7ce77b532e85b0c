"""Issue 11 items 3 and 5 in a real browser: an organization sends through Twilio (a local server speaking
its API); the open message log shows Twilio's delivery receipt without a reload (htmx polling answered
304 while nothing changed); the dashboard draws the chart of messages per day (uPlot, vendored) next to
its table, and its figures update by themselves when the contact replies; a message's detail page shows
the delivery receipt of a message sent after that, without a reload. Any CSP violation fails the test
(the ``context`` fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import Server
from e2e.test_conversation import deliver
from e2e.test_foundation import shot, sign_out
from e2e.test_messaging import choose_service, settled, signed_in
from tests.providers.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioServer, inbound_sms

pytestmark = pytest.mark.e2e

PHONE = "+447911123457"


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


def test_live_log_and_dashboard_chart(page: Page, server: Server, artifacts: Path, twilio: TwilioServer) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    tag = uuid.uuid4().hex[:6]
    org_name = f"Dash {tag}"
    admin_email, admin_password = f"dora-{tag}@dash.example", "dora admin password"

    # --- The sysadmin creates the organization and its admin.
    signed_in(page, server.sysadmin_email, server.sysadmin_password, "Sam Sysadmin")
    page.goto("/admin/organizations")
    page.locator("details.create-panel").evaluate("el => el.open = true")
    page.get_by_label("Name", exact=True).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=org_name)).to_be_visible()
    page.get_by_label("Full name").fill("Dora Admin")
    page.get_by_label("Email", exact=True).fill(admin_email)
    page.get_by_label("Initial password").fill(admin_password)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_text(f"is now an admin of “{org_name}”")).to_be_visible()
    sign_out(page)

    # --- The org admin: Twilio credentials, the chain [twilio], a contact.
    signed_in(page, admin_email, admin_password, "Dora Admin")
    expect(page.get_by_test_id("stats-empty")).to_be_visible()  # no message yet
    page.goto("/services/twilio")
    hook = page.get_by_test_id("twilio-hook-url").input_value()
    page.locator("#f-account_sid").fill(ACCOUNT_SID)
    page.locator("#f-auth_token").fill(AUTH_TOKEN)
    page.locator("#f-from_number").fill(FROM_NUMBER)
    page.locator("#f-api_base").fill(twilio.base_url)
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_text("credentials are checked and saved")).to_be_visible()
    page.goto("/servicechains")
    page.get_by_role("button", name="New servicechain").click()
    page.get_by_label("Name", exact=True).fill("SMS")
    choose_service(page, "twilio")
    page.get_by_role("button", name="Create servicechain").click()
    expect(page.get_by_role("heading", name="SMS")).to_be_visible()
    page.goto("/contacts/new")
    page.get_by_label("First name").fill("Dan")
    page.get_by_label("Phone").fill(PHONE)
    page.get_by_label("Default servicechain").select_option(label="SMS")
    page.get_by_role("button", name="Create contact").click()
    expect(page.get_by_role("heading", name="Dan")).to_be_visible()
    contact_url = page.url
    page.get_by_label("Reply to Dan").fill("Dinner at eight?")
    page.get_by_role("button", name="Send reply").click()
    deadline = time.monotonic() + 30
    while not twilio.sent and time.monotonic() < deadline:
        time.sleep(0.1)
    [sms] = twilio.sent

    # --- The message log, open: the receipt shows up by itself; unchanged polls are answered 304.
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/messages?page=1") else None)
    page.goto("/messages")
    log = page.locator("#message-list")
    expect(log).to_have_attribute("data-live", "true")
    row = log.locator("tr", has_text="Dinner at eight?")
    expect(row.locator("[data-state='MSG_SENT']")).to_be_visible(timeout=30_000)
    page.evaluate("window.__stillTheSamePage = true")  # gone if the page reloads
    page.wait_for_timeout(4_000)  # at least one poll with nothing new
    deliver(twilio.status_callback(sms, "delivered"))
    expect(log.locator("tr", has_text="Dinner at eight?").locator("[data-state='MSG_DELIVERED_USER']")).to_be_visible(
        timeout=15_000
    )
    settled(page)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
    assert 304 in statuses and 200 in statuses, statuses
    shot(page, artifacts, "50-message-log-live")

    # --- The dashboard: the chart is drawn from the table next to it; a reply updates the figures.
    page.goto("/")
    stats = page.locator("#dashboard-stats")
    chart = stats.locator("[data-chart='messages-per-day']")
    expect(chart.locator("canvas")).to_be_visible(timeout=10_000)  # uPlot drew it
    expect(chart.locator("table[data-chart-table] td[data-state='MSG_DELIVERED_USER']")).to_have_text("1")
    expect(stats.locator("tr[data-service='twilio'] [data-stat='delivered']")).to_have_text("1")
    assert page.evaluate("() => document.querySelector('[data-chart-canvas] canvas').width > 100")
    page.evaluate("window.__stillTheSamePage = true")
    deliver(inbound_sms(hook, PHONE, "Yes please"))
    expect(stats.locator("[data-stats='replies']")).to_contain_text("Yes please", timeout=20_000)
    expect(page.locator("#dashboard-stats [data-chart] canvas")).to_be_visible(timeout=10_000)  # drawn again
    settled(page)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
    shot(page, artifacts, "51-dashboard-chart")

    # --- A message's detail follows it past MSG_SENT: Twilio gives receipts, so it keeps watching.
    page.goto(contact_url)
    page.get_by_label("Reply to Dan").fill("See you there")
    page.get_by_role("button", name="Send reply").click()
    deadline = time.monotonic() + 30
    while len(twilio.sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    second = twilio.sent[-1]
    page.goto("/messages")
    page.locator("#message-list tr", has_text="See you there").locator("a.snippet").click()
    status = page.locator("#message-status")
    expect(page.get_by_test_id("message-state")).to_have_text("MSG_SENT", timeout=30_000)
    expect(status).to_have_attribute("hx-trigger", "every 5s")  # watching for a receipt
    page.evaluate("window.__stillTheSamePage = true")
    deliver(twilio.status_callback(second, "delivered"))
    expect(page.get_by_test_id("message-state")).to_have_text("MSG_DELIVERED_USER", timeout=15_000)
    settled(page)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
    shot(page, artifacts, "52-message-detail-receipt")
