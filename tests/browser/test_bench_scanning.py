"""A CAR-T episode taken from apheresis to infusion in Chromium, with typed scanner input.

A keyboard-wedge scanner types the code and presses Enter into whatever has the focus, so
every identifier here is typed with ``keyboard.type`` + Enter into the field the page focused
by itself; the test never clicks into a scan field first.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from playwright.sync_api import expect
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.auth import services as accounts
from lims.custody import production
from lims.custody.models import CustodyEvent, Item, ProductLot
from tests.browser.bench import flash, log_in_as, make_lot, scan
from tests.conftest import PASSWORD
from tests.integration.people import actor, cpr, new_episode

PEOPLE = {
    "tech": ("technician", "RH", "Tina Tech"),
    "tech2": ("technician", "RH", "Theo Tech"),
    "maker": ("technician", "AUH", "Mads Maker"),
    "qp": ("manager", "AUH", "Quinn Person"),
}


def cast(app) -> dict[str, SimpleNamespace]:
    with app.app_context():
        session = lims_db.session()
        accounts.create_site(
            session, actor=None, code="RH", name="Rigshospitalet", isbt_fin="W1234"
        )
        accounts.create_site(session, actor=None, code="AUH", name="Aarhus", isbt_fin="W5678")
        people = {}
        for username, (role, site, name) in PEOPLE.items():
            user = accounts.create_user(
                session,
                actor=None,
                username=username,
                full_name=name,
                role=role,
                site_code=site,
                password=PASSWORD,
            )
            people[username] = SimpleNamespace(id=user.id, username=username)
        return people


def ship(page, to_site: str, conditions: str, din: str) -> str:
    page.goto("/shipments/new")
    page.locator("#to_site").select_option(to_site)
    page.locator("#conditions").select_option(conditions)
    page.locator("#courier").fill("World Courier")
    page.get_by_role("button", name="Create shipment").click()
    scan(page, f"={din}00")
    expect(page.locator("#lines")).to_contain_text(din)
    page.get_by_role("button", name=re.compile(r"^Dispatch")).click()
    expect(page.locator("main")).to_contain_text("in transit")
    return page.url.rsplit("/", 1)[1]


def receive(page, shipment: str, din: str, witness: str | None = None) -> None:
    page.goto(f"/shipments/{shipment}")
    scan(page, f"={din}00")
    expect(page.locator("#reconciliation")).to_contain_text(din)
    if witness:
        page.locator("#witness_username").fill(witness)
        page.locator("#witness_password").fill(PASSWORD)
    page.get_by_role("button", name="Complete receipt").click()
    flash(page, "Receipt complete")


def test_episode_from_apheresis_to_infusion_by_scanning(page, live_server):
    people = cast(live_server)
    with live_server.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=1)
        coi = episode.coi
        apheresis = production.register_collection(
            session, actor=tech, coi=coi, volume_ml=220, collected_at=lims_db.utcnow()
        ).code

    log_in_as(page, "tech")
    page.goto("/scan")
    scan(page, "=<S1234V00")  # a product code where a bag identifier belongs
    expect(page.get_by_role("alert")).to_contain_text("not a bag or tube identifier")
    scan(page, f"={apheresis}00")  # the focus is back in the scan field
    expect(page.locator(".item-card")).to_contain_text("collected")
    outbound = ship(page, "AUH", "fresh", apheresis)

    log_in_as(page, "maker")
    receive(page, outbound, apheresis)
    page.goto("/scan")
    scan(page, f"={apheresis}00")
    page.get_by_role("button", name="Start manufacturing").click()
    flash(page, "start manufacturing – done")

    make_lot(page, "CAR19-26-001", apheresis, live_server.config["LIMS"]["custody"]["required_qc"])
    with live_server.app_context():
        bag = lims_db.session().scalar(select(ProductLot)).bags[0].code

    log_in_as(page, "qp")
    page.goto("/manufacturing/lots/CAR19-26-001")
    page.locator("#release_password").fill(PASSWORD)
    page.locator("#witness_username").fill("qp")  # one person cannot be both
    page.locator("#witness_password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("^Release lot")).click()
    flash(page, "cannot both")
    page.locator("#release_password").fill(PASSWORD)
    page.locator("#witness_username").fill("maker")
    page.locator("#witness_password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("^Release lot")).click()
    expect(page.locator("#bags")).to_contain_text("released")

    log_in_as(page, "maker")
    inbound = ship(page, "RH", "ln2_vapour", bag)

    log_in_as(page, "tech")
    receive(page, inbound, bag, witness="tech2")
    page.goto("/scan")
    scan(page, f"={bag}00")
    page.get_by_role("link", name="Store…").click()
    scan(page, "LN2-TANK-1/R2/P4")
    flash(page, "store – done")
    page.locator("#mode").select_option("issue")
    flash(page, "Scan mode")
    scan(page, f"={bag}00")
    flash(page, "issue – done")
    scan(page, f"={bag}00")  # the scanner reads twice: one event only
    flash(page, "double read")
    page.locator("#mode").select_option("")
    flash(page, "Scan mode off")
    scan(page, f"={bag}00")
    page.get_by_role("button", name="Thaw").click()
    flash(page, "thaw – done")

    page.get_by_role("link", name="Bedside identity check").click()
    scan(page, cpr(2))  # another patient's wristband
    scan(page, f"&/{coi}")
    page.keyboard.type("tech2")
    page.locator("#witness_password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator(".bedside-stop")).to_contain_text("DO NOT INFUSE")
    scan(page, cpr(1))
    scan(page, f"&/{coi}")
    page.keyboard.type("tech2")
    page.locator("#witness_password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator(".bedside-ok")).to_contain_text("IDENTITY VERIFIED")
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Record infusion").click()
    flash(page, "infuse – done")

    page.goto(f"/items/{bag}")
    expect(page.locator("main")).to_contain_text("infuse")
    with live_server.app_context():
        session = lims_db.session()
        actions = session.scalars(
            select(CustodyEvent.action).join(Item).where(Item.code == bag).order_by(CustodyEvent.id)
        ).all()
        assert actions == [
            "register", "quarantine", "release", "ship", "receive", "store", "issue", "thaw",
            "verify_identity", "infuse",
        ]  # fmt: skip
        assert verify_chain(session).first_broken_seq is None
