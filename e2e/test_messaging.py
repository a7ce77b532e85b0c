"""Issue 3's acceptance in a real browser: an org admin saves SMTP credentials and builds a chain
[smtp, log]; a user imports contacts from a CSV file, composes a message with a live preview, and
watches it reach MSG_SENT on its detail page without the page reloading (a real worker sends it to the
aiosmtpd server the fixture runs)."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import Server, watch_csp
from e2e.test_foundation import PHONE, WIDER_THAN_VIEWPORT, shot, sign_in, sign_out

pytestmark = pytest.mark.e2e

CSV = (
    "first_name,surname,email,phone,categories\n"
    "Grace,Hopper,grace-{tag}@navy.example,+1 202 555 0143,Pioneers\n"
    "Alan,Turing,alan-{tag}@bletchley.example,,Pioneers;Codebreakers\n"
    "Katherine,Johnson,katherine-{tag}@nasa.example,+1 757 555 0100,\n"
    "Bad,Row,not-an-email,,\n"
)



def settled(page: Page) -> None:
    """Wait until htmx has finished swapping and settling, so new content has its triggers bound."""
    page.wait_for_function(
        "() => document.readyState === 'complete' && "
        "!document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


def signed_in(page: Page, email: str, password: str, name: str) -> None:
    sign_in(page, email, password)
    expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()


def choose_service(page: Page, name: str) -> None:
    """Pick a service in the chain editor's "Add a service" select and add it (an htmx swap)."""
    editor = page.locator("#chain-editor")
    before = editor.locator("li[data-service]").count()
    page.get_by_label("Add a service").select_option(name)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(editor.locator("li[data-service]")).to_have_count(before + 1)


def test_messaging_scenario(page: Page, server: Server, artifacts: Path, browser: Browser) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    tag = uuid.uuid4().hex[:6]
    org_name = f"Signal Co {tag}"
    admin_email, admin_password = f"olga-{tag}@signal.example", "olga admin password"
    user_email, user_password = f"uma-{tag}@signal.example", "uma user password"

    # --- The sysadmin creates the organization and its admin.
    signed_in(page, server.sysadmin_email, server.sysadmin_password, "Sam Sysadmin")
    page.goto("/admin/organizations")
    page.locator("details.create-panel").evaluate("el => el.open = true")
    page.get_by_label("Name", exact=True).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=org_name)).to_be_visible()
    page.get_by_label("Full name").fill("Olga Admin")
    page.get_by_label("Email", exact=True).fill(admin_email)
    page.get_by_label("Initial password").fill(admin_password)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_text(f"is now an admin of “{org_name}”")).to_be_visible()
    sign_out(page)

    # --- The org admin saves SMTP credentials (checked against the real server first).
    signed_in(page, admin_email, admin_password, "Olga Admin")
    page.get_by_role("link", name="Services", exact=True).first.click()
    expect(page.get_by_role("heading", name="Services", exact=True)).to_be_visible()
    smtp_row = page.locator("tr", has_text="smtp")
    expect(smtp_row.get_by_text("Available")).to_be_visible()
    expect(smtp_row.get_by_text("Missing")).to_be_visible()
    shot(page, artifacts, "20-services")
    smtp_row.get_by_role("link", name="Set up").click()
    expect(page.get_by_role("heading", name="Credentials")).to_be_visible()
    page.get_by_role("button", name="Check and save").click()  # nothing filled in: inline errors
    expect(page.locator("#e-host")).to_be_visible()
    expect(page.locator("#e-from_address")).to_be_visible()
    page.get_by_label("Host").fill(server.smtp_host)
    page.get_by_label("Port").fill(str(server.smtp_port))
    page.get_by_label("Security").select_option("none")
    page.get_by_label("From address").fill(f"Signal Co <noreply-{tag}@signal.example>")
    page.get_by_role("button", name="Check and save").click()
    expect(page.get_by_text("credentials are checked and saved")).to_be_visible()
    expect(page.get_by_role("button", name="Delete credentials")).to_be_visible()
    expect(page.get_by_label("Host")).to_have_value("")  # stored credentials are never shown again
    shot(page, artifacts, "21-smtp-credentials")

    # --- ... and builds the chain [smtp, log] with the ordered editor.
    page.get_by_role("link", name="Chains", exact=True).first.click()
    expect(page.get_by_text("No servicechains yet")).to_be_visible()
    page.get_by_role("button", name="New servicechain").click()
    page.get_by_label("Name", exact=True).fill("Email, then the log")
    choose_service(page, "log")
    choose_service(page, "smtp")
    steps = page.locator("#chain-editor li[data-service]")
    expect(steps).to_have_count(2)
    assert [steps.nth(i).get_attribute("data-service") for i in range(2)] == ["log", "smtp"]
    page.get_by_role("button", name="Move smtp up").click()  # htmx: only the editor is swapped
    expect(steps.first).to_have_attribute("data-service", "smtp")
    expect(steps.nth(1)).to_have_attribute("data-service", "log")
    shot(page, artifacts, "22-chain-editor")
    page.get_by_role("button", name="Create servicechain").click()
    expect(page.get_by_role("heading", name="Email, then the log")).to_be_visible()
    expect(page.get_by_text("smtp → log")).to_be_visible()
    shot(page, artifacts, "23-chain")

    # ... and adds a user.
    page.get_by_role("link", name="Users", exact=True).first.click()
    page.get_by_label("Full name").fill("Uma User")
    page.get_by_label("Email", exact=True).fill(user_email)
    page.get_by_label("Initial password").fill(user_password)
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_text(f"Uma User <{user_email}> can now sign in")).to_be_visible()
    sign_out(page)

    # --- The user imports contacts from a CSV file.
    signed_in(page, user_email, user_password, "Uma User")
    page.get_by_role("link", name="Contacts", exact=True).first.click()
    expect(page.get_by_text("No contacts yet")).to_be_visible()
    page.get_by_role("button", name="Import CSV").click()
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": CSV.format(tag=tag).encode()}]
    )
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_test_id("import-created")).to_have_text("3")
    expect(page.get_by_test_id("import-rejected")).to_have_text("1")
    expect(page.get_by_role("cell", name="This is not a valid e-mail address.")).to_be_visible()
    shot(page, artifacts, "24-import-report")
    page.get_by_role("button", name="See the contacts").click()
    expect(page.get_by_role("link", name="Grace Hopper")).to_be_visible()
    expect(page.get_by_role("link", name="Alan Turing")).to_be_visible()
    settled(page)  # htmx has bound the search's input trigger (under CI load it once had not)
    # Search as you type (the list is swapped in place).
    page.get_by_label("Search", exact=True).fill("turing")
    expect(page.get_by_role("link", name="Grace Hopper")).to_have_count(0)
    expect(page.get_by_role("link", name="Alan Turing")).to_be_visible()
    page.get_by_label("Search", exact=True).fill("")
    expect(page.get_by_role("link", name="Grace Hopper")).to_be_visible()
    shot(page, artifacts, "25-contacts")

    # --- ... composes a message to one of them, with a live preview.
    page.get_by_role("link", name="Grace Hopper").click()
    expect(page.get_by_role("heading", name="Grace Hopper")).to_be_visible()
    expect(page.get_by_text("No messages yet")).to_be_visible()
    page.get_by_role("button", name="Send a message").click()
    expect(page.get_by_role("heading", name="New message")).to_be_visible()
    expect(page.locator("#f-contact_id option:checked")).to_contain_text("Grace Hopper")
    page.get_by_label("Servicechain").select_option(label="Email, then the log")
    message = page.get_by_label("Message", exact=True)
    message.press_sequentially("Hi {{ nickname }}", delay=10)
    expect(page.locator("#preview")).to_contain_text("Unknown template variable(s): nickname")
    message.fill("")
    message.press_sequentially("Hello {{ first_name }}, the compiler works. Regards, {{ surname }} fans", delay=5)
    expect(page.locator("#preview .preview-text")).to_have_text("Hello Grace, the compiler works. Regards, Hopper fans")
    shot(page, artifacts, "26-compose-preview")
    page.get_by_role("button", name="Send message").click()

    # --- ... lands on the detail page and watches the state change without a reload.
    expect(page).to_have_url(re.compile(r"/messages/[0-9a-f-]{36}$"))
    page.evaluate("() => { window.__marker = 1; }")
    state = page.get_by_test_id("message-state")
    expect(state).to_have_text("MSG_SENT", timeout=30_000)
    assert page.evaluate("() => window.__marker") == 1, "the page reloaded instead of updating in place"
    expect(page.locator("#message-status")).not_to_have_attribute("hx-trigger", re.compile(".+"))  # polling stopped
    expect(page.locator("#message-status .timeline-item")).to_have_count(1)
    expect(page.locator("#message-status")).to_contain_text("smtp")
    shot(page, artifacts, "27-message-sent")

    recipient = f"grace-{tag}@navy.example".encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(recipient in mail and b"Hello Grace" in mail for mail in server.mailbox.messages):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no mail with the rendered content reached the SMTP server: {server.mailbox.messages}")

    # The conversation and the log show it.
    page.get_by_role("link", name="Grace Hopper").click()
    expect(page.locator("#conversation")).to_contain_text("Hello Grace, the compiler works.")
    expect(page.locator("#conversation [data-state='MSG_SENT']")).to_be_visible()
    page.get_by_role("link", name="Messages", exact=True).first.click()
    expect(page).to_have_url(re.compile(r"/messages$"))
    settled(page)  # htmx has bound the filter's change trigger
    page.locator("#f-state").select_option("MSG_SENT")
    expect(page).to_have_url(re.compile(r"/messages\?state=MSG_SENT"))
    expect(page.locator("#message-list tbody tr")).to_have_count(1)
    shot(page, artifacts, "28-message-log")

    # --- Users read chains but do not edit them.
    page.get_by_role("link", name="Chains", exact=True).first.click()
    expect(page.get_by_role("link", name="Email, then the log")).to_be_visible()
    expect(page.get_by_role("button", name="New servicechain")).to_have_count(0)
    sign_out(page)

    # --- The pages at phone width: tables become cards, nothing scrolls sideways.
    phone = browser.new_context(viewport=PHONE, base_url=server.url, device_scale_factor=2)
    csp_violations = watch_csp(phone)
    try:
        mobile = phone.new_page()
        signed_in(mobile, user_email, user_password, "Uma User")
        for path, name in (("/contacts", "29-phone-contacts"), ("/messages", "30-phone-messages")):
            mobile.goto(path)
            expect(mobile.locator("table")).to_be_visible()
            shot(mobile, artifacts, name)
            width, wide = mobile.evaluate(WIDER_THAN_VIEWPORT)
            assert width <= PHONE["width"], f"{path} scrolls sideways at phone width ({width}px): {wide}"
        mobile.get_by_role("link", name=re.compile("Hello Grace")).click()
        expect(mobile.get_by_test_id("message-state")).to_have_text("MSG_SENT")
        shot(mobile, artifacts, "31-phone-message")
        width, wide = mobile.evaluate(WIDER_THAN_VIEWPORT)
        assert width <= PHONE["width"], f"the message page scrolls sideways at phone width ({width}px): {wide}"
        assert csp_violations == [], csp_violations
    finally:
        phone.close()
