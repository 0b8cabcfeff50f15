"""The issue's acceptance path: a demo episode taken from its apheresis to infusion in the
browser, by scanning, on the demo network (`lims demo`).

Karen Holm Jensen's collection at Rigshospitalet is made into a product at the hospital's own
cell therapy facility, so it never leaves the site: it goes by porter (hand-over in house),
not in a shipment. Every identifier is typed as a scanner types it.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.auth.models import User
from lims.custody.domain import Kind, State
from lims.custody.models import CustodyEvent, Item
from lims.demo import load_demo
from lims.patients import services as patients
from tests.browser.bench import flash, log_in_as, make_lot, scan

PASSWORD = "demo-password"


def step(page, name: str, done: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()
    flash(page, f"{done} – done")


def test_a_demo_episode_from_apheresis_to_infusion_in_the_browser(page, live_server):
    with live_server.app_context():
        session = lims_db.session()
        load_demo(session, password=PASSWORD)
        collection = session.scalar(
            select(Item).where(Item.kind == Kind.APHERESIS, Item.state == State.COLLECTED)
        )
        apheresis, pseudonym = collection.code, collection.episode.patient.pseudonym
        coi = collection.episode.coi
        tech = session.scalar(select(User).where(User.username == "tech.rh"))
        wristband = patients.reveal_identity(session, actor=tech, pseudonym=pseudonym).identifier

    log_in_as(page, password=PASSWORD, username="tech.rh")
    page.goto("/scan")
    scan(page, f"={apheresis}00")
    page.get_by_role("link", name="Hand over in house…").click()
    page.locator("#custodian").fill("porter, Blodbanken")
    page.get_by_role("button", name="Ship").click()
    flash(page, "ship – done")
    page.get_by_role("link", name="Receive…").click()
    page.get_by_role("button", name="Receive").click()
    step(page, "Start manufacturing", "start manufacturing")

    make_lot(page, "CAR19-DEMO-1", apheresis, live_server.config["LIMS"]["custody"]["required_qc"])

    log_in_as(page, password=PASSWORD, username="manager.rh")
    page.goto("/manufacturing/lots/CAR19-DEMO-1")
    page.locator("#review_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign review").click()
    page.locator("#release_password").fill(PASSWORD)
    page.locator("#witness_username").fill("tech.rh")
    page.locator("#witness_password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("^Release lot")).click()
    expect(page.locator("#bags")).to_contain_text("released")
    with live_server.app_context():
        bag = lims_db.session().scalar(
            select(Item.code)
            .where(Item.kind == Kind.PRODUCT_BAG, Item.state == State.RELEASED)
            .order_by(Item.id.desc())
        )

    log_in_as(page, password=PASSWORD, username="tech.rh")
    page.goto("/scan")
    scan(page, f"={bag}00")
    page.get_by_role("link", name="Hand over in house…").click()
    page.locator("#custodian").fill("porter, Blodbanken")
    page.get_by_role("button", name="Ship").click()
    page.get_by_role("link", name="Receive…").click()
    page.locator("#witness_username").fill("manager.rh")
    page.locator("#witness_password").fill(PASSWORD)
    page.get_by_role("button", name="Receive").click()
    flash(page, "receive – done")
    page.get_by_role("link", name="Store…").click()
    scan(page, "RH-CAS-12")  # a bag cassette in the demo's LN2 tank; the next free place
    flash(page, "store – RH-LN2-1 / RH-LN2-1-T3 / RH-CAS-12 / 1.")
    step(page, "Issue", "issue")
    step(page, "Thaw", "thaw")
    page.get_by_role("link", name="Bedside identity check").click()
    scan(page, wristband)
    scan(page, f"&/{coi}")
    page.keyboard.type("manager.rh")
    page.locator("#witness_password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator(".bedside-ok")).to_contain_text("IDENTITY VERIFIED")
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Record infusion").click()
    flash(page, "infuse – done")

    page.goto(f"/items/{bag}")
    for action in ("release", "receive", "verify identity", "infuse"):
        expect(page.locator("main")).to_contain_text(action)
    with live_server.app_context():
        session = lims_db.session()
        actions = session.scalars(
            select(CustodyEvent.action).join(Item).where(Item.code == bag).order_by(CustodyEvent.id)
        ).all()
        assert actions == [
            "register", "quarantine", "release", "ship", "receive", "store", "issue", "thaw",
            "verify_identity", "infuse",
        ]  # fmt: skip
        assert verify_chain(session).intact
