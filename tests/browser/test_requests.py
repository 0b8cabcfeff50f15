"""An aliquot request from the search to the receipt in Chromium (issue 8): a researcher fills a
cart and submits it, the biobank manager checks the opt-out register and signs a partial
approval, a technician picks by scan, records a short pick and hands the material over, and the
researcher confirms the receipt. Every step shows in the tubes' chain of custody, and no page
the researcher sees names a patient."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Item
from lims.identifiers import eye_readable
from lims.requests.models import AliquotRequest, RequestState
from lims.storage.models import Box
from tests.browser.bench import flash, log_in_as, scan
from tests.integration.biobank import STUDY, build_biobank
from tests.integration.people import build_cast

DETAILS = {
    "#title": "Cytokine kinetics after CAR-T",
    "#principal_investigator": "Prof. Ida Immun",
    "#ethics_ref": "H-24012345",
    "#dpa_ref": "P-2025-77",
    "#intended_analyses": "Luminex cytokine panel; no genetic analyses",
    "#delivery_details": "Collected by Rasmus Runner of the research group",
}
COLLECTOR = "Rasmus Runner"
DAMAGE = "tube cracked in the box"


@pytest.fixture
def app(live_server):
    """The factories of tests/conftest.py (make_site, make_user) write through the live
    server's app; the ``page`` fixture empties the tables afterwards."""
    return live_server


@pytest.fixture
def bank(live_server, make_site, make_user) -> SimpleNamespace:
    people = build_cast(make_site, make_user)
    bank = build_biobank(live_server, people, make_user)
    bank.manager, bank.tech = people["manager"], people["tech"]
    return bank


def assert_private(page, bank) -> None:
    """What the researcher has in front of them names no patient and no Chain of Identity."""
    html = page.content()
    secrets = [
        *bank.cprs,
        *(f"{c[:6]}-{c[6:]}" for c in bank.cprs),
        *bank.names,
        *bank.cois,
        *(eye_readable(coi) for coi in bank.cois),
        "2025-03-01",  # the calendar date the follow-up samples were drawn
    ]
    assert len(secrets) == 16 and all(secrets)
    leaked = [secret for secret in secrets if secret in html]
    assert leaked == [], f"the researcher's page {page.url} shows {leaked}"


def group_row(page, pseudonym: str, timepoint: str):
    """A subject-and-timepoint row of the search results."""
    return (
        page.locator(".search-results tbody tr")
        .filter(has=page.locator(f'input[name="subject"][value="{pseudonym}"]'))
        .filter(has=page.locator(f'input[name="at"][value="{timepoint}"]'))
    )


def custody(session, code: str) -> list[str]:
    return list(
        session.scalars(
            select(CustodyEvent.action)
            .join(Item, CustodyEvent.item_id == Item.id)
            .where(Item.code == code)
            .order_by(CustodyEvent.id)
        )
    )


def states(live_server, codes: list[str]) -> dict[str, State]:
    with live_server.app_context():
        session = lims_db.session()
        rows = session.execute(select(Item.code, Item.state).where(Item.code.in_(codes))).all()
        return {code: state for code, state in rows}


def storage_order(live_server, codes: list[str]) -> list[tuple[str, str]]:
    """(code, position name) of these tubes as they stand in the freezer: box, then position."""
    with live_server.app_context():
        session = lims_db.session()
        rows = session.execute(
            select(Item, Box).join(Box, Item.box_id == Box.id).where(Item.code.in_(codes))
        ).all()
        ordered = sorted(rows, key=lambda row: (row.Box.code, row.Item.position))
        return [(row.Item.code, row.Box.geometry.name(row.Item.position)) for row in ordered]


# -- the people --------------------------------------------------------------------------------


def researcher_fills_and_submits(
    page, bank, first: tuple[str, str], second: tuple[str, str]
) -> str:
    """Search, tick both tubes of the ``first`` group, "add 2" of the ``second``, fill in the
    form, submit. The request's code."""
    subject, timepoint = first
    log_in_as(page, bank.researcher.username)
    assert_private(page, bank)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Requests").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Aliquot requests")
    page.locator("#search-biobank").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Search the biobank")
    page.locator("#study").select_option(STUDY)
    page.locator("#material_type").select_option("plasma")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"study=CARTBANK-01.*material_type=plasma"))
    # Three subjects at D0, D7 and D28, two tubes each, and one more of subject 1 at AUH.
    expect(page.locator("#results h2")).to_have_text("9 group(s), 19 aliquot(s)")
    assert_private(page, bank)

    # A subject-and-timepoint group opened: tick both its tubes.
    group_row(page, subject, timepoint).get_by_role("link", name="Show aliquots").click()
    expect(page.locator("#group h2")).to_have_text(f"Subject {subject} at {timepoint}")
    expect(page.locator("#group tbody tr")).to_have_count(2)
    assert_private(page, bank)
    for code in bank.tubes[first]:
        page.locator(f"#pick-{code}").check()
    page.locator("#group").get_by_role("button", name="Add to cart").click()
    flash(page, "2 aliquot(s) added to ")
    cart = page.locator("#cart a code").inner_text()
    flash(page, f"2 aliquot(s) added to {cart}.")
    # Back on the same search: the tubes show as in the cart.
    expect(page.locator("#group .tag-ok")).to_have_text(["in cart", "in cart"])

    # The shortcut on another group: two plasma tubes, the biobank chooses which.
    row = group_row(page, *second)
    row.get_by_label("How many").fill("2")
    row.get_by_label("Type").select_option("plasma")
    row.get_by_role("button", name="Add").click()
    flash(page, f"2 aliquot(s) added to {cart}.")
    expect(page.locator("#cart")).to_contain_text(f"{cart}, 4 aliquot(s)")
    assert_private(page, bank)

    # The cart: the request page of the draft; its details, then submit.
    page.locator("#cart").get_by_role("link", name="Open the cart").click()
    expect(page).to_have_url(re.compile(rf"/requests/{cart}$"))
    expect(page.locator("#lines tbody tr")).to_have_count(4)
    assert_private(page, bank)
    page.locator("#edit-details").click()
    for selector, value in DETAILS.items():
        page.locator(selector).fill(value)
    page.locator("#delivery").select_option("pick_up")
    assert_private(page, bank)
    page.get_by_role("button", name="Save").click()
    flash(page, f"The details of {cart} are saved.")
    expect(page.locator("#particulars")).to_contain_text(DETAILS["#title"])
    page.locator("#submit").get_by_role("button", name="Submit request").click()
    flash(page, f"Request {cart} submitted: 4 aliquot(s) for review at RH.")
    expect(page.locator("h1 .request-state")).to_have_text("submitted")
    assert_private(page, bank)
    return cart


def manager_approves_all_but(page, live_server, bank, code: str, left_out: str) -> None:
    """Opt-out register checked (nobody found), one tube unticked, a wrong password first."""
    log_in_as(page, bank.manager.username)
    expect(page.locator("#inbox-link")).to_have_text("Inbox (1)")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Requests").click()
    waiting = page.locator(f"#waiting #request-{code}")
    expect(waiting).to_contain_text(DETAILS["#title"])
    expect(waiting.locator(".request-state")).to_have_text("submitted")
    waiting.get_by_role("link", name=code).click()
    page.locator("#to-review").click()
    expect(page).to_have_url(re.compile(rf"/requests/{code}/review$"))

    page.get_by_role("button", name="Start review").click()
    flash(page, f"Request {code} is under review.")
    opt_out = page.locator("#opt-out-form")
    expect(opt_out.locator("input[type=checkbox]")).to_have_count(2)
    for box in opt_out.locator("input[type=checkbox]").all():
        expect(box).not_to_be_checked()
    opt_out.locator("#note").fill("register reply 2025/117")
    opt_out.get_by_role("button", name="Record the check for 2 subject(s)").click()
    flash(page, "Opt-out register check recorded for 2 patient(s); 0 found in the register.")
    expect(page.locator("#opt-out .tag-ok")).to_have_text(["not in the register"] * 2)

    decide = page.locator("#decide-form")
    expect(page.locator("#lines")).to_contain_text("4 of 4 can be approved now.")
    decide.get_by_label(f"Approve {left_out}").uncheck()
    decide.locator("#password").fill("not-my-password")
    decide.get_by_role("button", name=re.compile(r"^Approve selected")).click()
    expect(page.locator("[data-alert]")).to_be_visible()
    expect(page.locator("[data-alert]")).to_contain_text(
        "The password for the signature is wrong; nothing was signed or changed."
    )
    expect(page.locator("h1 .request-state")).to_have_text("under review")
    expect(decide.locator("input[name=approve]:checked")).to_have_count(3)
    expect(decide.get_by_label(f"Approve {left_out}")).not_to_be_checked()
    with live_server.app_context():
        session = lims_db.session()
        request = session.scalar(select(AliquotRequest).where(AliquotRequest.code == code))
        assert request.state is RequestState.UNDER_REVIEW
        assert {line.item.state for line in request.lines} == {State.STORED}

    decide.locator("#password").fill(bank.manager.password)
    decide.get_by_role("button", name=re.compile(r"^Approve selected")).click()
    flash(
        page,
        f"Request {code} partly approved: 3 aliquot(s) reserved; the technicians have a pick list.",
    )
    expect(page.locator("h1 .request-state")).to_have_text("partly approved")
    expect(page.locator(f"#decided-lines #line-{left_out}")).to_contain_text(
        "not approved not chosen by the manager"
    )


def technician_picks_and_hands_over(
    page, bank, code: str, expected: list[tuple[str, str]], stranger: str
) -> None:
    """Pick by scan in storage order; a wrong tube; one damaged; hand-over to the collector."""
    log_in_as(page, bank.tech.username)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Requests").click()
    page.locator(f"#waiting #request-{code}").get_by_role("link", name=code).click()
    page.locator("#to-pick").click()
    expect(page).to_have_url(re.compile(rf"/requests/{code}/pick$"))

    # The list walks the freezer: box by box, position by position.
    rows = page.locator("#pick-list tbody tr")
    expect(rows).to_have_count(len(expected))
    ids = rows.evaluate_all("rows => rows.map(row => row.id)")
    assert ids == [f"line-{c}" for c, _ in expected]
    expect(rows.locator("td.position")).to_have_text([position for _, position in expected])

    # A tube that is not on the list: loud, and the field is ready for the next scan.
    scan(page, stranger)
    alert = page.locator("[data-alert]")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text(f"WRONG TUBE: {stranger} is not on the pick list of {code}.")
    field = page.locator("[data-scan-field]")
    expect(field).to_be_focused()
    expect(field).to_have_value("")
    expect(rows).to_have_count(len(expected))

    (first, _), (second, _), (damaged, _) = expected
    scan(page, first)
    flash(page, f"✓ {first} picked.")
    flash(page, "2 tube(s) left on the pick list.")
    expect(page.locator("[data-alert]")).to_have_count(0)
    scan(page, second)
    flash(page, f"✓ {second} picked.")
    expect(page.locator(f"#picked #line-{second}.just-picked")).to_be_visible()
    expect(page.locator("#picked tbody tr")).to_have_count(2)

    # The third is cracked: recorded short, damaged, with what was found.
    line = page.locator(f"#pick-list #line-{damaged}")
    line.get_by_text("Record short pick").click()
    line.locator(f"#kind-{damaged}").select_option("damaged")
    line.locator(f"#reason-{damaged}").fill(DAMAGE)
    line.get_by_role("button", name="Record short").click()
    flash(page, f"{damaged} recorded short (damaged): {DAMAGE}")
    flash(page, "Everything is picked or recorded short: hand it over or ship it.")
    expect(page.locator(f"#short #line-{damaged}")).to_contain_text(DAMAGE)

    # Hand-over to the person who collects, then the manifest to go with the tubes.
    page.get_by_role("link", name="Hand over or ship").click()
    expect(page).to_have_url(re.compile(rf"/requests/{code}/dispatch$"))
    page.locator("#courier").fill(COLLECTOR)
    page.get_by_role("button", name="Hand over").click()
    flash(page, f"Request {code}: 2 aliquot(s) handed over to {COLLECTOR}.")
    expect(page.locator("h1 .request-state")).to_have_text("handed over")
    link = page.locator("#manifest-link")
    expect(link).to_be_visible()
    response = page.request.get(link.get_attribute("href"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF-")


def researcher_confirms_receipt(page, bank, code: str) -> None:
    log_in_as(page, bank.researcher.username)
    # Under review, partly approved, the short pick, ready to collect, handed over.
    expect(page.locator("#inbox-link")).to_have_text("Inbox (5)")
    assert_private(page, bank)
    page.locator("#inbox-link").click()
    expect(page.locator("#unread-count")).to_have_text("5 unread")
    notifications = page.locator("#notifications tbody tr.unread")
    expect(notifications).to_have_count(5)
    expect(page.locator("#notifications")).to_contain_text(
        f"Request {code}: 2 aliquots handed over to {COLLECTOR}."
    )
    expect(notifications.filter(has_text="Short pick")).to_have_count(1)
    assert_private(page, bank)
    notifications.filter(has_text="Material handed over").get_by_role(
        "button", name="Open request"
    ).click()
    expect(page).to_have_url(re.compile(rf"/requests/{code}$"))
    expect(page.locator("h1 .request-state")).to_have_text("handed over")
    expect(page.locator("#dispatch")).to_contain_text(COLLECTOR)
    assert_private(page, bank)
    page.locator("#receipt #note").fill("arrived frozen on dry ice")
    page.get_by_role("button", name="Confirm receipt").click()
    flash(page, f"Receipt confirmed: request {code} is closed.")
    expect(page.locator("h1 .request-state")).to_have_text("closed")
    expect(page.locator("#lines .line-counts")).to_contain_text("2 received")
    assert_private(page, bank)


# -- the scenario ------------------------------------------------------------------------------


def test_a_request_goes_from_the_search_to_the_receipt_in_the_browser(page, live_server, bank):
    # Before anything is asked, the manager's inbox is empty.
    log_in_as(page, bank.manager.username)
    expect(page.locator("#inbox-link")).to_have_text("Inbox (0)")

    first, second = (bank.pseudonyms[1], "D0"), (bank.pseudonyms[2], "D7")
    code = researcher_fills_and_submits(page, bank, first, second)
    ticked = bank.tubes[first]
    chosen = bank.tubes[second]
    requested = [*ticked, *chosen]
    with live_server.app_context():
        session = lims_db.session()
        lines = session.scalar(select(AliquotRequest).where(AliquotRequest.code == code)).lines
        assert sorted(line.item.code for line in lines) == sorted(requested)

    left_out = ticked[1]
    manager_approves_all_but(page, live_server, bank, code, left_out)
    approved = [c for c in requested if c != left_out]
    assert states(live_server, requested) == {
        **{c: State.RESERVED for c in approved},
        left_out: State.STORED,
    }

    expected = storage_order(live_server, approved)
    stranger = bank.tubes[(bank.pseudonyms[0], "D0")][0]
    technician_picks_and_hands_over(page, bank, code, expected, stranger)
    picked, damaged = [c for c, _ in expected[:2]], expected[2][0]

    researcher_confirms_receipt(page, bank, code)

    with live_server.app_context():
        session = lims_db.session()
        request = session.scalar(select(AliquotRequest).where(AliquotRequest.code == code))
        assert request.state is RequestState.CLOSED
        for tube in picked:
            assert custody(session, tube) == [
                "register",
                "store",
                "reserve",
                "pick",
                "hand_over",
                "distribute",
            ], tube
        assert custody(session, damaged) == ["register", "store", "reserve", "discard"]
        assert custody(session, left_out) == ["register", "store"]
        assert custody(session, stranger) == ["register", "store"]
        assert verify_chain(session).intact
    assert states(live_server, [*picked, damaged, left_out]) == {
        **{c: State.DISTRIBUTED for c in picked},
        damaged: State.DISCARDED,
        left_out: State.STORED,
    }
