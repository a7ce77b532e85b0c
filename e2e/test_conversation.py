"""Issue 9 in a real browser: an org admin saves Twilio credentials (checked against a local server that
speaks Twilio's API) and finds the hook URL to paste into Twilio's console; they reply to a contact from
the conversation page; the real worker sends it; then Twilio's signed callbacks — a delivery receipt,
and the contact's SMS reply, POSTed by this test to the hook URL of the running server — show up in the
open page without a reload. Any CSP violation fails the test (the ``context`` fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import Server
from e2e.test_foundation import shot, sign_out
from e2e.test_messaging import choose_service, settled, signed_in
from tests.providers.server import Callback
from tests.providers.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioServer, inbound_sms

pytestmark = pytest.mark.e2e

PHONE = "+447911123456"


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


def deliver(callback: Callback) -> None:
    """POST a provider's signed callback to the running server, as the provider would."""
    response = httpx.post(callback.url, content=callback.body, headers=callback.headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")


def test_a_reply_shows_up_in_the_open_conversation(
    page: Page, server: Server, artifacts: Path, twilio: TwilioServer
) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    tag = uuid.uuid4().hex[:6]
    org_name = f"Two Way {tag}"
    admin_email, admin_password = f"tina-{tag}@twoway.example", "tina admin password"

    # --- The sysadmin creates the organization and its admin.
    signed_in(page, server.sysadmin_email, server.sysadmin_password, "Sam Sysadmin")
    page.goto("/admin/organizations")
    page.locator("details.create-panel").evaluate("el => el.open = true")
    page.get_by_label("Name", exact=True).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=org_name)).to_be_visible()
    page.get_by_label("Full name").fill("Tina Admin")
    page.get_by_label("Email", exact=True).fill(admin_email)
    page.get_by_label("Initial password").fill(admin_password)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_text(f"is now an admin of “{org_name}”")).to_be_visible()
    sign_out(page)

    # --- The org admin saves Twilio credentials and finds the hook URL for Twilio's console.
    signed_in(page, admin_email, admin_password, "Tina Admin")
    page.goto("/services/twilio")
    hook_field = page.get_by_test_id("twilio-hook-url")
    expect(hook_field).to_be_visible()
    hook = hook_field.input_value()
    assert hook.startswith(f"{server.url}/hooks/twilio/"), hook
    expect(page.get_by_text("A message comes in")).to_be_visible()
    page.locator("#f-account_sid").fill(ACCOUNT_SID)
    page.locator("#f-auth_token").fill(AUTH_TOKEN)
    page.locator("#f-from_number").fill(FROM_NUMBER)
    page.locator("#f-api_base").fill(twilio.base_url)
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_text("credentials are checked and saved")).to_be_visible()
    expect(page.get_by_test_id("twilio-hook-url")).to_have_value(hook)
    shot(page, artifacts, "40-twilio-hook-url")

    # ... builds the chain [twilio] and a contact whose default it is.
    page.goto("/servicechains")
    page.get_by_role("button", name="New servicechain").click()
    page.get_by_label("Name", exact=True).fill("SMS")
    choose_service(page, "twilio")
    page.get_by_role("button", name="Create servicechain").click()
    expect(page.get_by_role("heading", name="SMS")).to_be_visible()
    page.goto("/contacts/new")
    page.get_by_label("First name").fill("Steve")
    page.get_by_label("Phone").fill(PHONE)
    page.get_by_label("Default servicechain").select_option(label="SMS")
    page.get_by_role("button", name="Create contact").click()
    expect(page.get_by_role("heading", name="Steve")).to_be_visible()

    # --- The conversation page: empty, live; the reply box sends through the contact's chain.
    conversation = page.locator("#conversation")
    expect(conversation).to_have_attribute("data-live", "true")
    expect(conversation.get_by_text("No messages yet")).to_be_visible()
    page.evaluate("window.__stillTheSamePage = true")  # gone if the page reloads
    page.get_by_label("Reply to Steve").fill("Are you coming tonight?")
    page.get_by_role("button", name="Send reply").click()
    outgoing = conversation.locator("li[data-direction='outgoing']", has_text="Are you coming tonight?")
    expect(outgoing).to_be_visible()
    expect(page.get_by_label("Reply to Steve")).to_have_value("")  # emptied for the next one
    expect(outgoing.locator("[data-state='MSG_SENT']")).to_be_visible(timeout=30_000)  # the worker sent it
    deadline = time.monotonic() + 10
    while not twilio.sent and time.monotonic() < deadline:
        time.sleep(0.1)
    [sms] = twilio.sent
    assert (sms.to, sms.from_, sms.body, sms.status_callback) == (PHONE, FROM_NUMBER, "Are you coming tonight?", hook)

    # --- Twilio's delivery receipt arrives: the open page shows it by itself.
    deliver(twilio.status_callback(sms, "delivered"))
    expect(outgoing.locator("[data-state='MSG_DELIVERED_USER']")).to_be_visible(timeout=10_000)

    # --- Steve answers by SMS: Twilio posts it, signed, to the hook URL; it appears without a reload.
    deliver(inbound_sms(hook, PHONE, "Yes, on my way!"))
    incoming = conversation.locator("li[data-direction='incoming']", has_text="Yes, on my way!")
    expect(incoming).to_be_visible(timeout=10_000)
    expect(outgoing.locator("[data-state='MSG_REPLIED']")).to_be_visible(timeout=10_000)
    settled(page)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
    # newest at the bottom, and the thread is scrolled to it
    bubbles = conversation.locator("li.bubble")
    expect(bubbles).to_have_count(2)
    expect(bubbles.last).to_contain_text("Yes, on my way!")
    assert page.evaluate(
        "() => { const t = document.querySelector('#conversation [data-thread]');"
        " return t.scrollHeight - t.scrollTop - t.clientHeight < 4; }"
    )
    shot(page, artifacts, "41-conversation-live")

    # --- STOP by SMS: the contact is marked opted out on the open page too.
    deliver(inbound_sms(hook, PHONE, "STOP"))
    expect(conversation.get_by_test_id("conversation-opted-out")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page reloaded"
