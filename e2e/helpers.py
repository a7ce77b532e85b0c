"""Set-up steps the e2e scenarios share, done through the pages as a person would: a new organization
with its admin (by the sysadmin), a servicechain, contacts imported from a CSV file."""

from __future__ import annotations

from dataclasses import dataclass

from playwright.sync_api import FilePayload, Page, expect

from e2e.conftest import Server
from e2e.test_foundation import sign_out
from e2e.test_messaging import choose_service, signed_in


@dataclass(frozen=True)
class OrgAdmin:
    organization: str
    name: str
    email: str
    password: str


def new_organization(page: Page, server: Server, tag: str, org_name: str, admin_name: str) -> OrgAdmin:
    """The sysadmin creates ``org_name`` and its admin ``admin_name``, then signs out."""
    first = admin_name.split()[0].lower()
    admin = OrgAdmin(org_name, admin_name, f"{first}-{tag}@{tag}.example", f"{first} admin password")
    signed_in(page, server.sysadmin_email, server.sysadmin_password, "Sam Sysadmin")
    page.goto("/admin/organizations")
    page.locator("details.create-panel").evaluate("el => el.open = true")
    page.get_by_label("Name", exact=True).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name=org_name)).to_be_visible()
    page.get_by_label("Full name").fill(admin_name)
    page.get_by_label("Email", exact=True).fill(admin.email)
    page.get_by_label("Initial password").fill(admin.password)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_text(f"is now an admin of “{org_name}”")).to_be_visible()
    sign_out(page)
    return admin


def sign_in_as(page: Page, who: OrgAdmin) -> None:
    signed_in(page, who.email, who.password, who.name)


def new_chain(page: Page, name: str, services: list[str]) -> None:
    """A servicechain of ``services`` in this order (an org admin's page)."""
    page.goto("/servicechains")
    page.get_by_role("button", name="New servicechain").click()
    page.get_by_label("Name", exact=True).fill(name)
    for service in services:
        choose_service(page, service)
    page.get_by_role("button", name="Create servicechain").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()


def import_contacts(page: Page, csv: str, created: int) -> None:
    """Import ``csv`` on the contacts' import page; ``created`` rows must be created."""
    page.goto("/contacts/import")
    upload: FilePayload = {"name": "contacts.csv", "mimeType": "text/csv", "buffer": csv.encode()}
    page.get_by_label("CSV file").set_input_files(files=[upload])
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_test_id("import-created")).to_have_text(str(created))
