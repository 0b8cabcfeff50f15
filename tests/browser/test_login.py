"""Logging in as each role in a real browser."""

import pytest
from playwright.sync_api import expect

from lims import db as lims_db
from lims.auth import services
from tests.conftest import PASSWORD

ROLE_LINKS = {
    "admin": ["Home", "Inventory", "Users", "Sites", "Audit trail"],
    "manager": [
        "Home",
        "Scan",
        "Shipments",
        "Storage",
        "Inventory",
        "Requests",
        "Manufacturing",
        "Bedside check",
        "Follow-up",
        "Audit trail",
    ],
    "technician": [
        "Home",
        "Scan",
        "Shipments",
        "Storage",
        "Inventory",
        "Requests",
        "Manufacturing",
        "Bedside check",
        "Follow-up",
    ],
    "researcher": ["Home", "Inventory", "Requests"],
}


def make_user(app, role: str, username: str) -> None:
    with app.app_context():
        session = lims_db.session()
        try:
            services.site_by_code(session, "RH")
        except services.NotFound:
            services.create_site(session, actor=None, code="RH", name="Rigshospitalet")
        services.create_user(
            session,
            actor=None,
            username=username,
            full_name=f"Browser {role.title()}",
            role=role,
            site_code="RH",
            password=PASSWORD,
        )


def fill_login(page, username: str, password: str) -> None:
    page.goto("/login")
    # The username field has the focus: type as a person (or a badge scanner) would.
    expect(page.locator("#username")).to_be_focused()
    page.keyboard.type(username)
    page.locator("#password").fill(password)
    page.keyboard.press("Enter")


@pytest.mark.parametrize("role", list(ROLE_LINKS))
def test_each_role_logs_in_and_sees_its_navigation(page, live_server, role):
    make_user(live_server, role, f"b.{role}")
    fill_login(page, f"b.{role}", PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Good to see you, Browser")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(ROLE_LINKS[role])
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_wrong_password_shows_an_error(page, live_server):
    make_user(live_server, "technician", "b.wrong")
    fill_login(page, "b.wrong", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    expect(page).to_have_url(f"{live_server.base_url}/login")


def test_sixth_wrong_password_locks_the_account(page, live_server):
    make_user(live_server, "manager", "b.locked")
    for attempt in range(1, 5):
        fill_login(page, "b.locked", f"wrong {attempt}")
        expect(page.get_by_role("alert")).to_contain_text(f"{5 - attempt} attempt")
    fill_login(page, "b.locked", "wrong 5")
    expect(page.get_by_role("alert")).to_contain_text("now locked for 15 minutes")
    fill_login(page, "b.locked", "wrong 6")
    expect(page.get_by_role("alert")).to_contain_text("This account is locked")
    fill_login(page, "b.locked", PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("This account is locked")
