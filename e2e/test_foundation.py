"""Issue 2's acceptance in a real browser: organizations, admins, users, API clients, sign-in, CSRF."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import Server, watch_csp

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
WIDER_THAN_VIEWPORT = """() => {
    const wide = [];
    for (const el of document.querySelectorAll("body *")) {
        const box = el.getBoundingClientRect();
        if (box.right > window.innerWidth + 1) wide.push(`${el.tagName}.${el.className} ${Math.round(box.right)}px`);
    }
    return [document.documentElement.scrollWidth, wide.slice(0, 10)];
}"""


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def open_create_panel(page: Page) -> None:
    """The "New …" forms sit in a panel that is open when the list is empty, folded otherwise."""
    panel = page.locator("details.create-panel")
    if panel.get_attribute("open") is None:
        panel.locator("summary").click()


def sign_out(page: Page) -> None:
    page.locator("details.account-menu summary").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_foundation_scenario(page: Page, server: Server, artifacts: Path, browser: Browser) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm asks before suspending or revoking
    tag = uuid.uuid4().hex[:6]
    org_name = f"Acme Messaging {tag}"
    admin_email, admin_password = f"ada-{tag}@acme.example", "ada admin password"
    user_email, user_password = f"bob-{tag}@acme.example", "bob user password"

    # Anonymous: the dashboard sends to the sign-in page.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    shot(page, artifacts, "01-login")

    # --- The sysadmin creates an organization and its admin.
    sign_in(page, server.sysadmin_email, server.sysadmin_password)
    expect(page.get_by_role("heading", name="Hello, Sam Sysadmin")).to_be_visible()
    shot(page, artifacts, "02-dashboard-sysadmin")
    page.get_by_role("link", name="Organizations", exact=True).first.click()
    expect(page.get_by_role("heading", name="Organizations", exact=True)).to_be_visible()
    expect(page.get_by_text("No organizations yet")).to_be_visible()
    page.get_by_role("button", name="Create organization").click()  # empty name: inline error
    expect(page.locator("#e-name")).to_have_text("Enter the organization's name.")
    page.get_by_label("Name", exact=True).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=org_name)).to_be_visible()
    expect(page.get_by_text(f"Organization “{org_name}” created")).to_be_visible()

    page.get_by_label("Full name").fill("Ada Admin")
    page.get_by_label("Email", exact=True).fill(admin_email)
    page.get_by_label("Initial password").fill(admin_password)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_text(f"is now an admin of “{org_name}”")).to_be_visible()
    expect(page.get_by_role("cell", name=admin_email)).to_be_visible()
    shot(page, artifacts, "03-organization-detail")

    # A second organization, suspended from the list with HTMX (the row is swapped in place).
    page.get_by_role("link", name="Organizations", exact=True).first.click()
    # the list has replaced the detail page (whose own panel open_create_panel would otherwise find)
    expect(page.get_by_role("heading", name="Organizations", exact=True)).to_be_visible()
    spare = f"Spare Org {tag}"
    open_create_panel(page)
    page.get_by_label("Name", exact=True).fill(spare)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=spare)).to_be_visible()
    page.get_by_role("link", name="Organizations", exact=True).first.click()
    row = page.locator("tr", has_text=spare)
    row.get_by_role("button", name="Suspend").click()
    expect(row.get_by_text("Suspended", exact=True)).to_be_visible()
    expect(row.get_by_role("button", name="Reactivate")).to_be_visible()
    expect(page.locator("#flashes")).to_contain_text(f"“{spare}” is suspended")
    shot(page, artifacts, "04-organizations")
    sign_out(page)

    # --- The org admin creates a user and an API client.
    sign_in(page, admin_email, admin_password)
    expect(page.get_by_role("heading", name="Hello, Ada Admin")).to_be_visible()
    expect(page.get_by_text(org_name).first).to_be_visible()
    expect(page.get_by_role("link", name="Organizations", exact=True)).to_have_count(0)
    page.get_by_role("link", name="Users", exact=True).first.click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    page.get_by_label("Full name").fill("Bob User")
    page.get_by_label("Email", exact=True).fill(user_email)
    page.get_by_label("Initial password").fill("short")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#e-password")).to_contain_text("at least 10 characters")
    page.get_by_label("Initial password").fill(user_password)
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_text("Bob User <" + user_email + "> can now sign in")).to_be_visible()
    expect(page.get_by_role("cell", name=user_email)).to_be_visible()
    shot(page, artifacts, "05-users")

    page.get_by_role("link", name="API clients", exact=True).first.click()
    expect(page.get_by_text("No API clients yet")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("CRM integration")
    page.get_by_label("contacts:read").check()
    page.get_by_label("messages:send").check()
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", name="API client “CRM integration” created")).to_be_visible()
    expect(page.get_by_text("shown only this once")).to_be_visible()
    secret = page.get_by_test_id("client-secret").input_value()
    assert secret.startswith("vcs_") and len(secret) > 30
    shot(page, artifacts, "06-client-created")
    page.get_by_role("button", name="Done, back to API clients").click()
    expect(page.get_by_role("cell", name="CRM integration")).to_be_visible()
    assert secret not in page.content()  # shown once, never again
    shot(page, artifacts, "07-clients")
    sign_out(page)

    # --- The user signs in and out; a wrong password shows an error.
    sign_in(page, user_email, "not the right password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password.")
    expect(page.get_by_label("Email", exact=True)).to_have_value(user_email)
    shot(page, artifacts, "08-login-error")
    sign_in(page, user_email, user_password)
    expect(page.get_by_role("heading", name="Hello, Bob User")).to_be_visible()
    expect(page.get_by_role("link", name="Users", exact=True)).to_have_count(0)
    page.get_by_role("link", name="Tokens", exact=True).first.click()
    expect(page.get_by_text("No tokens yet")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("nightly export")
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_test_id("token-value").input_value()
    assert token.startswith("vol_pat_")
    page.get_by_role("button", name="Done, back to tokens").click()
    expect(page.get_by_role("cell", name="nightly export")).to_be_visible()
    shot(page, artifacts, "09-tokens")

    # --- A forged CSRF token is refused (header, as htmx sends it, and the form's hidden input).
    status = page.evaluate(
        """async () => {
            const r = await fetch('/tokens', {method: 'POST', headers: {'x-csrftoken': 'forged-token',
                'content-type': 'application/x-www-form-urlencoded'}, body: 'name=evil&scopes=contacts:read'});
            return r.status;
        }"""
    )
    assert status == 403
    page.locator("form[action='/tokens'] input[name='_csrf_token']").evaluate("el => el.value = 'f'.repeat(128)")
    page.evaluate("() => document.body.removeAttribute('hx-headers')")  # so only the tampered input is sent
    open_create_panel(page)
    page.get_by_label("Name", exact=True).fill("forged")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="You cannot open this page")).to_be_visible()
    expect(page.get_by_text("Your form expired or was not sent from this site")).to_be_visible()
    shot(page, artifacts, "10-csrf-refused")
    page.goto("/tokens")
    expect(page.get_by_role("cell", name="forged")).to_have_count(0)
    expect(page.get_by_role("cell", name="evil")).to_have_count(0)
    sign_out(page)

    # --- The main pages at phone width.
    phone = browser.new_context(viewport=PHONE, base_url=server.url, device_scale_factor=2)
    csp_violations = watch_csp(phone)
    try:
        mobile = phone.new_page()
        mobile.goto("/login")
        shot(mobile, artifacts, "11-phone-login")
        sign_in(mobile, admin_email, admin_password)
        expect(mobile.get_by_role("heading", name="Hello, Ada Admin")).to_be_visible()
        shot(mobile, artifacts, "12-phone-dashboard")
        mobile.goto("/users")
        expect(mobile.get_by_role("cell", name=user_email)).to_be_visible()
        shot(mobile, artifacts, "13-phone-users")
        width, wide = mobile.evaluate(WIDER_THAN_VIEWPORT)
        assert width <= PHONE["width"], f"the page scrolls sideways at phone width ({width}px): {wide}"
        assert csp_violations == [], csp_violations
    finally:
        phone.close()


def test_throttled_login_says_so(page: Page, server: Server, artifacts: Path) -> None:
    email = f"nobody-{uuid.uuid4().hex[:6]}@e2e.example"
    for _ in range(5):
        sign_in(page, email, "wrong wrong wrong")
        expect(page.get_by_role("alert")).to_contain_text("Wrong email or password.")
    sign_in(page, email, "wrong wrong wrong")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    shot(page, artifacts, "14-login-throttled")
