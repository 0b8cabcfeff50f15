"""What a person does at the bench in the browser, shared by the workflow tests."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.conftest import PASSWORD


def scan(page, text: str) -> None:
    """The scanner: the code and Enter into the field that has the focus (never clicked),
    once the page's script has set the field up (a technician scans a page they can see)."""
    expect(page.locator("html[data-bench-ready]")).to_have_count(1)
    expect(page.locator("[data-scan-field]:focus")).to_have_count(1)
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def log_in_as(page, username: str, password: str = PASSWORD) -> None:
    if page.get_by_role("button", name="Log out").count():
        page.get_by_role("button", name="Log out").click()
    page.goto("/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Good to see you")


def flash(page, text: str) -> None:
    expect(page.locator(".flashes")).to_contain_text(text)


def make_lot(page, lot_number: str, apheresis: str, required_qc: list[str]) -> None:
    """A one-bag lot from the scanned collection, its QC entered as passed, in quarantine."""
    page.goto("/manufacturing/lots/new")
    page.locator("#lot_number").fill(lot_number)
    page.locator("#apheresis_scan").focus()
    scan(page, f"={apheresis}00")
    expect(page.locator("[data-scan-list]")).to_contain_text(apheresis)
    page.locator("#bag_count").fill("1")
    page.locator("#volume_ml").fill("68")
    page.get_by_role("button", name="Register lot and bags").click()
    expect(page).to_have_url(re.compile(rf"/manufacturing/lots/{re.escape(lot_number)}$"))
    for test in required_qc:
        page.locator("#test").select_option(test)
        page.locator("#value").fill("ok")
        page.locator("#qc input[value=yes]").check()
        page.get_by_role("button", name="Record result").click()
    page.get_by_role("button", name=re.compile(r"in quarantine$")).click()
