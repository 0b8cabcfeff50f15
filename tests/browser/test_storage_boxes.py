"""A technician sets up a freezer, fills a box by scanning, undoes a slip, places, checks out,
returns and moves material, and reads the box map, in Chromium with typed scanner input."""

from __future__ import annotations

import re
from types import SimpleNamespace

from playwright.sync_api import expect
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.auth import services as accounts
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Item
from tests.browser.bench import flash, log_in_as, scan
from tests.conftest import PASSWORD
from tests.integration.people import actor
from tests.integration.test_storage import tubes


def bench_staff(app) -> tuple[SimpleNamespace, list[str]]:
    """Tina at RH, and five plasma tubes she has registered."""
    with app.app_context():
        session = lims_db.session()
        accounts.create_site(
            session, actor=None, code="RH", name="Rigshospitalet", isbt_fin="W1234"
        )
        user = accounts.create_user(
            session,
            actor=None,
            username="tina",
            full_name="Tina Tech",
            role="technician",
            site_code="RH",
            password=PASSWORD,
        )
        tina = SimpleNamespace(id=user.id, username="tina")
        return tina, [item.code for item in tubes(session, actor(session, tina), 5)]


def cell(page, position: str):
    return page.locator(f'.boxmap [data-position="{position}"]')


def test_a_technician_sets_up_a_freezer_and_fills_a_box_by_scanning(page, live_server):
    tina, codes = bench_staff(live_server)
    log_in_as(page, tina.username)

    # Set up: a -80 °C freezer with a rack and a 9x9 box, and a second freezer to move into.
    for code, name in (("RH-F80-1", "Plasma freezer"), ("RH-F80-2", "Spare freezer")):
        page.goto("/storage/units/new")
        page.locator("#code").fill(code)
        page.locator("#name").fill(name)
        page.locator("#unit_type").select_option("freezer")
        page.locator("#temperature_class").select_option("minus_80")
        page.get_by_role("button", name="Create").click()
        flash(page, f"Storage unit {code} created.")
        rack_form = page.locator(f'form[action="/storage/units/{code}/racks"]')
        rack_form.locator("#code").fill(f"{code}-R1")
        rack_form.get_by_role("button", name="Add rack").click()
        flash(page, f"Rack {code}-R1 added.")
    page.goto("/storage/units/RH-F80-1")
    box_form = page.locator('form[action="/storage/units/RH-F80-1/boxes"]')
    box_form.locator("#code").fill("PL-001")
    box_form.locator("#rack").select_option("RH-F80-1-R1")
    box_form.locator("#box_type").select_option("9x9")
    box_form.get_by_role("button", name="Add box").click()
    flash(page, "Box PL-001 added.")
    expect(page.locator(".boxmap .cell")).to_have_count(81)
    expect(page.locator(".boxmap .cell.empty")).to_have_count(81)

    # Fill by scanning: each tube goes to the next free position, the map follows.
    page.get_by_role("link", name="Fill by scanning").click()
    expect(page.locator(".next-position")).to_have_text("A1")
    scan(page, codes[0])
    flash(page, f"{codes[0]} stored: RH-F80-1 / RH-F80-1-R1 / PL-001 / A1.")
    expect(cell(page, "A1")).to_have_class(re.compile(r"\bmt-plasma\b.*\bhere\b"))
    expect(page.locator(".next-position")).to_have_text("A2")
    scan(page, codes[1])
    expect(cell(page, "A2")).to_have_attribute("data-code", codes[1])
    # A slip: the wrong tube went in. Undo puts it back to registered, A2 is free again.
    page.get_by_role("button", name=f"Undo: {codes[1]}").click()
    flash(page, f"Undone: {codes[1]} is registered, in no box.")
    expect(cell(page, "A2")).to_have_class(re.compile(r"\bempty\b"))
    # Scanning a tube that is already in the box is refused loudly and changes nothing.
    scan(page, codes[0])
    expect(page.locator("[data-alert]")).to_contain_text(
        "is in RH-F80-1 / RH-F80-1-R1 / PL-001 / A1 already"
    )
    scan(page, codes[2])
    expect(cell(page, "A2")).to_have_attribute("data-code", codes[2])

    # Place one tube by scanning item, box and position.
    page.goto("/storage/place")
    scan(page, codes[3])
    scan(page, "PL-001")
    expect(page.locator("#position:focus")).to_have_count(1)
    scan(page, "c05")
    flash(page, f"{codes[3]} stored: RH-F80-1 / RH-F80-1-R1 / PL-001 / C5.")
    expect(cell(page, "C5")).to_have_class(re.compile(r"\bhere\b"))
    # The box stays in the form: the next tube, then Enter for the next free position.
    scan(page, codes[4])
    expect(page.locator("#position:focus")).to_have_count(1)
    page.keyboard.press("Enter")
    flash(page, f"{codes[4]} stored: RH-F80-1 / RH-F80-1-R1 / PL-001 / A3.")

    # Find jumps to the position; the map cell leads to the tube's card.
    page.goto("/storage")
    scan(page, codes[3])
    expect(page).to_have_url(re.compile(r"/storage/boxes/PL-001\?at=23$"))
    expect(cell(page, "C5")).to_have_class(re.compile(r"\bhere\b"))
    expect(cell(page, "C5")).to_have_attribute("title", re.compile(rf"C5: {codes[3]} · Plasma"))
    cell(page, "C5").click()
    expect(page).to_have_url(re.compile(rf"/scan\?code={codes[3]}&from=link$"))
    expect(page.locator("main")).to_contain_text("PL-001 / C5")

    # Check out from the card, then back to its kept place by scanning the box.
    page.get_by_role("button", name="Check out").click()
    flash(page, f"{codes[3]}: check out – done.")
    page.goto("/storage/boxes/PL-001")
    expect(cell(page, "C5")).to_have_class(re.compile(r"\bst-checked_out\b"))
    page.goto(f"/scan?code={codes[3]}&from=link")
    page.get_by_role("link", name="Return to storage…").click()
    scan(page, "PL-001")
    flash(page, f"{codes[3]}: return to storage – RH-F80-1 / RH-F80-1-R1 / PL-001 / C5.")

    # Move the box with its content into the other freezer.
    page.goto("/storage/boxes/PL-001")
    move = page.locator('form[action="/storage/boxes/PL-001/move"]')
    move.locator("#unit").select_option("RH-F80-2")
    move.locator("#rack").select_option("RH-F80-2-R1")
    move.locator("#reason").fill("defrosting RH-F80-1")
    move.get_by_role("button", name="Move box").click()
    flash(page, "Box moved with 4 items.")
    expect(page.locator(".box-path")).to_contain_text("RH-F80-2")

    with live_server.app_context():
        session = lims_db.session()
        item = session.scalar(select(Item).where(Item.code == codes[3]))
        assert (item.state, item.position, item.thaw_count) == (State.STORED, 23, 1)
        assert item.location == "RH-F80-2 / RH-F80-2-R1 / PL-001 / C5"
        steps = session.scalars(
            select(CustodyEvent.action)
            .where(CustodyEvent.item_id == item.id)
            .order_by(CustodyEvent.id)
        ).all()
        assert steps == ["register", "store", "check_out", "return_to_storage", "move"]
        assert verify_chain(session).intact


def test_a_late_pageshow_does_not_garble_a_scan_that_has_begun(page, live_server):
    """After a refusal the place page keeps the scans and selects the tube's, so the next scan
    replaces it. On a busy machine the ``pageshow`` event can come while the scanner is already
    typing; selecting again then let the rest of the code overwrite its start."""
    tina, codes = bench_staff(live_server)
    log_in_as(page, tina.username)
    page.goto("/storage/place")
    scan(page, codes[0])
    scan(page, "NO-SUCH-BOX")
    scan(page, "A1")
    expect(page.locator("[data-alert]")).to_be_visible()
    field = page.locator("#item")
    expect(field).to_be_focused()
    expect(field).to_have_value(codes[0])
    # The next scan begins; the late pageshow arrives half-way through it.
    page.keyboard.type(codes[1][:5])
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow'))")
    page.keyboard.type(codes[1][5:])
    expect(field).to_have_value(codes[1])
