"""Issue 7 (headers) in a real browser: the pages work under the Content-Security-Policy (the ``context``
fixture fails a test on any violation), and the API reference works with no network but the app's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from e2e.conftest import Server
from e2e.test_foundation import shot, sign_in

pytestmark = pytest.mark.e2e


def test_api_reference_works_offline(page: Page, server: Server, artifacts: Path) -> None:
    elsewhere: list[str] = []

    def only_the_app(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_app)
    for path in ("/schema", "/schema/swagger"):
        response = page.goto(path)
        assert response is not None and response.ok
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect(page.locator(".info .title", has_text="Voluble API")).to_be_visible()
        operation = page.locator(".opblock-summary", has_text="/api/v1/me").first
        expect(operation).to_be_visible()
    operation.click()  # the operation opens, with its responses
    expect(page.locator(".opblock-body .responses-wrapper").first).to_be_visible()
    shot(page, artifacts, "30-api-reference")
    assert elsewhere == [], f"the API reference tried to load {elsewhere}"


def test_secret_fields_select_on_click_and_error_pages_go_back(page: Page, server: Server) -> None:
    sign_in(page, server.sysadmin_email, server.sysadmin_password)
    expect(page.get_by_role("heading", name="Hello, Sam Sysadmin")).to_be_visible()
    page.goto("/tokens")
    page.get_by_label("Name", exact=True).fill(f"select me {uuid.uuid4().hex[:6]}")
    page.get_by_role("button", name="Create token").click()
    field = page.get_by_test_id("token-value")
    expect(field).to_be_visible()
    field.click()  # static/js/app.js selects the whole value (was an inline onclick)
    selected = field.evaluate("el => [el.selectionStart, el.selectionEnd, el.value.length]")
    assert selected[0] == 0 and selected[1] == selected[2] > 20

    page.goto("/tokens")
    page.goto(f"/contacts/{uuid.uuid4()}")  # a sysadmin has no contacts: an error page
    expect(page.locator(".error-page")).to_be_visible()
    page.get_by_role("button", name="Go back").click()  # was a javascript: link
    expect(page).to_have_url(f"{server.url}/tokens")
