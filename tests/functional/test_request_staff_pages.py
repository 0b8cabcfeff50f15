"""The biobank staff's request pages through the test client: review with the opt-out register
and the e-signature, the access committee, the pick list worked by scan, short picks and the
hand-over or shipment; who may see them, and that no patient identity is on any of them."""

from __future__ import annotations

import html
import re
from datetime import date

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import ESignature
from lims.custody.domain import State
from lims.custody.models import Item
from lims.identifiers import eye_readable
from lims.patients import services as patients
from lims.requests import fulfilment, review, services
from lims.requests.models import (
    AliquotRequest,
    LineStatus,
    OptOutCheck,
    RequestLine,
    RequestReview,
    RequestState,
)
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.biobank import STUDY, build_biobank
from tests.integration.people import actor, build_cast

DETAILS = {
    "title": "Cytokine kinetics after CAR-T",
    "principal_investigator": "Prof. Ida Immun",
    "ethics_ref": "H-24012345",
    "dpa_ref": "P-2025-77",
    "intended_analyses": "Luminex cytokine panel",
    "delivery_details": "Collected by the lab technician of the research group",
}


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


@pytest.fixture
def bank(app, people, make_user):
    return build_biobank(app, people, make_user)


# -- helpers -----------------------------------------------------------------------------------


def browser(app, person):
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response, category: str) -> list[str]:
    page = response.get_data(as_text=True)
    found = re.findall(rf'<div class="flash flash-{category}"[^>]*>(.*?)</div>', page, re.S)
    return [html.unescape(message) for message in found]


def words(page: str) -> str:
    """The page's text without its tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split()).replace(" ,", ",")


def alert_of(response) -> str:
    match = re.search(
        r'<div class="scan-alert"[^>]*data-alert>(.*?)</div>', text_of(response), re.S
    )
    assert match, "no loud banner on the page"
    return words(match.group(1))


def post(client, path: str, data: dict, *, follow: bool = False):
    token = csrf_token(client, path)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=follow)


def submitted(app, bank, codes, **details) -> str:
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, bank.researcher)
        request = services.create_request(session, actor=researcher, **{**DETAILS, **details})
        services.add_items(session, actor=researcher, code=request.code, item_codes=codes)
        services.submit(session, actor=researcher, code=request.code)
        return request.code


def checked(app, people, code, registered=()) -> None:
    with app.app_context():
        session = lims_db.session()
        review.record_opt_out_checks(
            session, actor=actor(session, people["manager"]), code=code, registered=registered
        )


def approved(app, people, bank, codes, **details) -> str:
    code = submitted(app, bank, codes, **details)
    checked(app, people, code)
    with app.app_context():
        session = lims_db.session()
        review.decide(
            session,
            actor=actor(session, people["manager"]),
            code=code,
            decision="approved",
            password=PASSWORD,
        )
    return code


def picked_all(app, people, code, codes) -> None:
    with app.app_context():
        session = lims_db.session()
        for tube in codes:
            fulfilment.pick(session, actor=actor(session, people["tech"]), code=code, scan=tube)


def state_of(app, code: str) -> State:
    with app.app_context():
        return lims_db.session().scalar(select(Item.state).where(Item.code == code))


def request_state(app, code: str) -> RequestState:
    with app.app_context():
        return lims_db.session().scalar(
            select(AliquotRequest.state).where(AliquotRequest.code == code)
        )


def lines_of(app, code: str) -> dict[str, tuple[LineStatus, str]]:
    with app.app_context():
        rows = lims_db.session().execute(
            select(Item.code, RequestLine.status, RequestLine.reason)
            .join(RequestLine, RequestLine.item_id == Item.id)
            .join(AliquotRequest, RequestLine.request_id == AliquotRequest.id)
            .where(AliquotRequest.code == code)
        )
        return {item: (status, reason) for item, status, reason in rows}


def row_of(response, item_code: str) -> str:
    match = re.search(
        rf'<tr[^>]*id="line-{re.escape(item_code)}"[^>]*>(.*?)</tr>', text_of(response), re.S
    )
    assert match, f"no row for {item_code}"
    return match.group(0)


def birth_dates(bank) -> list[str]:
    found = []
    for cpr in bank.cprs:
        day, month, year = int(cpr[:2]), int(cpr[2:4]), 1900 + int(cpr[4:6])
        born = date(year, month, day)
        found += [born.isoformat(), born.strftime("%d-%m-%Y"), born.strftime("%d.%m.%Y")]
    return found


def assert_no_identity(bank, page: str) -> None:
    for cpr in bank.cprs:
        assert cpr not in page and f"{cpr[:6]}-{cpr[6:]}" not in page
    for secret in (*bank.names, *bank.cois, *birth_dates(bank)):
        assert secret not in page
    for coi in bank.cois:
        assert eye_readable(coi) not in page


# -- review ------------------------------------------------------------------------------------


def test_review_lists_the_reasons_and_records_the_opt_out_check(app, people, bank):
    s1, s2, _ = bank.pseudonyms
    t1, t2 = bank.tubes[(s1, "D0")]
    t3 = bank.tubes[(s2, "D0")][0]
    code = submitted(app, bank, [t1, t2, t3])
    manager = browser(app, people["manager"])
    path = f"/requests/{code}/review"

    page = manager.get(path)
    assert page.status_code == 200
    body = text_of(page)
    assert "Start review" in body and DETAILS["ethics_ref"] in body and DETAILS["dpa_ref"] in body
    assert f"opt-out register not checked for {s1} in the last 30 days" in row_of(page, t1)
    assert f"opt-out register not checked for {s2} in the last 30 days" in row_of(page, t3)
    assert "0 of 3 can be approved now." in body
    assert re.search(rf'value="{t1}"[^>]*disabled', row_of(page, t1))

    started = post(manager, path, {"step": "start"})
    assert started.status_code == 302
    assert request_state(app, code) is RequestState.UNDER_REVIEW
    assert "Start review" not in text_of(manager.get(path))

    stranger = post(manager, path, {"step": "opt_out", "registered": ["S-NOBODY"]})
    assert stranger.status_code == 422
    assert alert_of(stranger) == "Not done Not a patient of this request: S-NOBODY"
    with app.app_context():
        assert lims_db.session().scalar(select(func.count()).select_from(OptOutCheck)) == 0

    done = post(
        manager, path, {"step": "opt_out", "registered": [s2], "note": "reply 42"}, follow=True
    )
    assert done.status_code == 200
    assert flashes(done, "error") == [
        "Opt-out register check recorded for 2 patient(s); 1 found in the register."
    ]
    with app.app_context():
        rows = lims_db.session().execute(
            select(OptOutCheck.registered, OptOutCheck.note, OptOutCheck.checked_by_id).order_by(
                OptOutCheck.id
            )
        )
        assert sorted(rows) == [
            (False, "reply 42", people["manager"].id),
            (True, "reply 42", people["manager"].id),
        ]
    assert "2 of 3 can be approved now." in text_of(done)
    assert "eligible" in row_of(done, t1) and "checked" in row_of(done, t1)
    assert f"{s2} is in the opt-out register" in row_of(done, t3)
    assert re.search(rf'value="{t3}"[^>]*disabled', row_of(done, t3))
    subject = re.search(rf'<tr id="subject-{s2}">(.*?)</tr>', text_of(done), re.S).group(1)
    assert "in the register: opted out" in subject and "Mona Manager" in subject
    # The one found last time stays ticked for the next check.
    assert re.search(rf'value="{s2}" checked', subject)


def test_approve_a_subset_with_the_password(app, people, bank):
    s1 = bank.pseudonyms[0]
    t1, t2 = bank.tubes[(s1, "D0")]
    code = submitted(app, bank, [t1, t2])
    checked(app, people, code)
    manager = browser(app, people["manager"])
    path = f"/requests/{code}/review"
    page = manager.get(path)
    # Every eligible aliquot is ticked to begin with.
    assert re.search(rf'value="{t1}" aria-label="[^"]*" checked', row_of(page, t1))
    assert re.search(rf'value="{t2}" aria-label="[^"]*" checked', row_of(page, t2))
    assert "Approve selected (signing means: approved)" in text_of(page)
    assert "Reject (signing means: rejected)" in text_of(page)

    wrong = post(
        manager,
        path,
        {"step": "decide", "decision": "approved", "approve": [t1], "password": "not-it"},
    )
    assert wrong.status_code == 422
    assert "The password for the signature is wrong" in alert_of(wrong)
    # The choice survives the refusal: t1 ticked, t2 not.
    assert " checked" in row_of(wrong, t1) and " checked" not in row_of(wrong, t2)
    assert [state_of(app, t1), state_of(app, t2)] == [State.STORED, State.STORED]
    assert request_state(app, code) is RequestState.UNDER_REVIEW

    done = post(
        manager,
        path,
        {
            "step": "decide",
            "decision": "approved",
            "approve": [t1],
            "comment": "one is enough",
            "password": PASSWORD,
        },
        follow=True,
    )
    assert done.status_code == 200
    assert flashes(done, "success") == [
        f"Request {code} partly approved: 1 aliquot(s) reserved; the technicians have a pick list."
    ]
    assert request_state(app, code) is RequestState.PARTLY_APPROVED
    assert [state_of(app, t1), state_of(app, t2)] == [State.RESERVED, State.STORED]
    assert lines_of(app, code) == {
        t1: (LineStatus.APPROVED, ""),
        t2: (LineStatus.NOT_APPROVED, "not chosen by the manager"),
    }
    with app.app_context():
        signature = lims_db.session().scalar(
            select(ESignature).where(ESignature.entity == "aliquot_request")
        )
        assert (signature.meaning, signature.printed_name) == ("approved", "Mona Manager")
    body = text_of(done)
    assert 'id="decide-form"' not in body
    assert "Approved by Mona Manager, " in words(body) and "1 aliquot(s) reserved" in body


def test_nothing_chosen_or_no_button_is_refused(app, people, bank):
    tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
    code = submitted(app, bank, [tube])
    checked(app, people, code)
    manager = browser(app, people["manager"])
    path = f"/requests/{code}/review"
    none = post(manager, path, {"step": "decide", "decision": "approved", "password": PASSWORD})
    assert none.status_code == 422
    assert "Approve at least one aliquot, or reject the request." in alert_of(none)
    nobutton = post(manager, path, {"step": "decide", "approve": [tube], "password": PASSWORD})
    assert nobutton.status_code == 422
    assert "Press Approve selected or Reject." in alert_of(nobutton)
    assert post(manager, path, {"step": "bogus"}).status_code == 422
    assert state_of(app, tube) is State.STORED


def test_reject_needs_a_comment(app, people, bank):
    tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
    code = submitted(app, bank, [tube])
    manager = browser(app, people["manager"])
    path = f"/requests/{code}/review"
    bare = post(manager, path, {"step": "decide", "decision": "rejected", "password": PASSWORD})
    assert bare.status_code == 422
    assert alert_of(bare) == "Not done Give the reason for the rejection."
    assert request_state(app, code) is RequestState.SUBMITTED

    done = post(
        manager,
        path,
        {
            "step": "decide",
            "decision": "rejected",
            "comment": "no ethics approval yet",
            "password": PASSWORD,
        },
        follow=True,
    )
    assert flashes(done, "success") == [f"Request {code} rejected; the researcher is told why."]
    assert request_state(app, code) is RequestState.REJECTED
    assert lines_of(app, code) == {tube: (LineStatus.NOT_APPROVED, "request rejected")}
    assert state_of(app, tube) is State.STORED
    assert "“no ethics approval yet”" in text_of(done)


def test_a_tube_another_approval_took_is_refused_loudly_with_fresh_eligibility(app, people, bank):
    s1 = bank.pseudonyms[0]
    shared, other = bank.tubes[(s1, "D7")]
    first = submitted(app, bank, [shared])
    second = submitted(app, bank, [shared, other])
    checked(app, people, first)
    manager = browser(app, people["manager"])
    path = f"/requests/{second}/review"
    manager.get(path)  # the manager opens the page while both are eligible
    with app.app_context():
        session = lims_db.session()
        review.decide(
            session,
            actor=actor(session, people["manager"]),
            code=first,
            decision="approved",
            password=PASSWORD,
        )
    taken = post(
        manager,
        path,
        {
            "step": "decide",
            "decision": "approved",
            "approve": [shared, other],
            "password": PASSWORD,
        },
    )
    assert taken.status_code == 409
    message = alert_of(taken)
    assert message.startswith("Not done Nothing was approved; 1 of the chosen aliquots cannot be")
    assert f"{shared}: reserved for another request ({first})" in message
    assert f"reserved for another request ({first})" in row_of(taken, shared)
    assert re.search(rf'value="{shared}"[^>]*disabled', row_of(taken, shared))
    assert " checked" in row_of(taken, other) and " checked" not in row_of(taken, shared)
    assert state_of(app, other) is State.STORED
    assert request_state(app, second) is RequestState.SUBMITTED


# -- the access committee ----------------------------------------------------------------------


def test_the_committee_signs_on_its_page(app, people, bank, make_user):
    member = make_user(
        "researcher", username="committee.anna", site_code="RH", full_name="Anna Board"
    )
    app.config["LIMS"]["requests"]["access_committee"] = {STUDY: ["committee.anna"]}
    s1 = bank.pseudonyms[0]
    tubes = bank.tubes[(s1, "D0")] + bank.tubes[(s1, "D7")]
    code = submitted(app, bank, tubes)
    path = f"/requests/{code}/committee/{STUDY}"

    anna = browser(app, member)
    page = anna.get(path)
    assert page.status_code == 200
    body = text_of(page)
    assert "4 aliquot(s) from 1 subject(s)." in body
    assert re.search(rf"<td>{s1}</td><td>D0 <span[^>]*>day 0</span></td><td>Plasma</td>", body)
    assert_no_identity(bank, body)

    assert browser(app, people["manager"]).get(path).status_code == 403
    assert browser(app, people["qp"]).get(path).status_code == 404
    assert anna.get(f"/requests/{code}/committee/OTHER-STUDY").status_code == 404
    manager_view = text_of(browser(app, people["manager"]).get(f"/requests/{code}/review"))
    assert "waiting" in manager_view and "Approval waits for the access committee" in manager_view

    wrong = post(anna, path, {"decision": "approved", "password": "nope"})
    assert wrong.status_code == 422
    assert "The password for the signature is wrong" in alert_of(wrong)
    bare = post(anna, path, {"decision": "rejected", "password": PASSWORD})
    assert bare.status_code == 422 and "Give the reason for the rejection." in alert_of(bare)
    with app.app_context():
        assert lims_db.session().scalar(select(func.count()).select_from(RequestReview)) == 0

    done = post(
        anna, path, {"decision": "approved", "comment": "fine", "password": PASSWORD}, follow=True
    )
    assert flashes(done, "success") == [
        f"Your committee's decision on {code} for {STUDY} is signed: approved."
    ]
    assert "Approved by Anna Board, " in words(
        text_of(done)
    ) and 'id="committee-form"' not in text_of(done)
    with app.app_context():
        rows = (
            lims_db.session()
            .execute(select(RequestReview.stage, RequestReview.study, RequestReview.decision))
            .all()
        )
        assert [(s.value, study, d.value) for s, study, d in rows] == [
            ("committee", STUDY, "approved")
        ]
    assert request_state(app, code) is RequestState.UNDER_REVIEW
    again = post(anna, path, {"decision": "approved", "password": PASSWORD})
    assert again.status_code == 409


# -- picking -----------------------------------------------------------------------------------


def test_the_pick_list_in_storage_order_and_picking_by_scan(app, people, bank):
    s1, s2, _ = bank.pseudonyms
    wanted = bank.tubes[(s2, "D0")] + bank.tubes[(s1, "D28")] + bank.tubes[(s1, "D0")]
    code = approved(app, people, bank, wanted)
    tech = browser(app, people["tech"])
    path = f"/requests/{code}/pick"

    page = tech.get(path)
    assert page.status_code == 200
    body = text_of(page)
    with app.app_context():
        positions = dict(
            lims_db.session()
            .execute(select(Item.code, Item.position).where(Item.code.in_(wanted)))
            .all()
        )
    in_order = sorted(wanted, key=positions.get)
    listed = re.findall(
        r'<tr id="line-([^"]+)">', body.split('id="pick-list"')[1].split("</table>")[0]
    )
    assert listed == in_order
    first_row = row_of(page, in_order[0])
    assert "<td>RH</td>" in first_row and "RH-F80" in first_row and "RH-B1" in first_row
    assert re.search(r'<input[^>]*data-scan-field[^>]*name="scan"', body)
    with open(app.static_folder + "/requests_staff.css") as css:
        assert "@media print" in css.read()

    stranger = bank.tubes[(bank.pseudonyms[2], "D0")][0]
    wrong = post(tech, path, {"step": "scan", "scan": stranger})
    assert wrong.status_code == 409
    assert "WRONG TUBE" in text_of(wrong)
    assert alert_of(wrong) == (
        f"Not picked WRONG TUBE: {stranger} is not on the pick list of {code}."
    )
    scan_input = re.search(r'<input[^>]*name="scan"[^>]*>', text_of(wrong)).group(0)
    assert "autofocus" in scan_input and 'value=""' in scan_input
    assert state_of(app, stranger) is State.STORED
    assert {status for status, _ in lines_of(app, code).values()} == {LineStatus.APPROVED}

    right = post(tech, path, {"step": "scan", "scan": in_order[0]}, follow=True)
    assert right.status_code == 200
    assert flashes(right, "success") == [f"✓ {in_order[0]} picked."]
    assert flashes(right, "info") == ["5 tube(s) left on the pick list."]
    assert 'class="picked just-picked"' in row_of(right, in_order[0])
    assert state_of(app, in_order[0]) is State.PICKED
    assert lines_of(app, code)[in_order[0]][0] is LineStatus.PICKED
    assert request_state(app, code) is RequestState.PICKING

    again = post(tech, path, {"step": "scan", "scan": in_order[0]})
    assert again.status_code == 409
    assert alert_of(again) == f"Not picked {in_order[0]} is picked already."


def test_a_short_pick_and_a_withdrawn_tube_to_put_back(app, people, bank):
    s1, s2 = bank.pseudonyms[:2]
    keep, broken = bank.tubes[(s1, "D0")]
    pulled = bank.tubes[(s2, "D0")][0]
    code = approved(app, people, bank, [keep, broken, pulled])
    tech = browser(app, people["tech"])
    path = f"/requests/{code}/pick"

    nothing = post(tech, path, {"step": "short", "item_code": broken, "kind": "damaged"})
    assert nothing.status_code == 422
    assert "Say what was found (or not found)." in alert_of(nothing)
    assert state_of(app, broken) is State.RESERVED

    short = post(
        tech,
        path,
        {"step": "short", "item_code": broken, "kind": "damaged", "reason": "cracked lid"},
        follow=True,
    )
    assert flashes(short, "success") == [f"{broken} recorded short (damaged): cracked lid"]
    assert lines_of(app, code)[broken] == (LineStatus.SHORT, "cracked lid")
    assert state_of(app, broken) is State.DISCARDED
    assert "cracked lid" in row_of(short, broken)

    picked_all(app, people, code, [pulled])
    with app.app_context():
        session = lims_db.session()
        patients.record_consent(
            session,
            actor=actor(session, people["tech"]),
            pseudonym=s2,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="letter",
        )
    page = tech.get(path)
    body = text_of(page)
    assert "Put back into storage: scan it on the Storage → Place page." in body
    assert f"/storage/place?item={pulled}" in body
    assert "consent withdrawn" in row_of(page, pulled)


# -- dispatch ----------------------------------------------------------------------------------


def test_hand_over_after_picking(app, people, bank):
    tubes = bank.tubes[(bank.pseudonyms[0], "D0")]
    code = approved(app, people, bank, tubes)
    tech = browser(app, people["tech"])
    path = f"/requests/{code}/dispatch"
    early = tech.get(path)
    assert "2 tube(s) still on the pick list." in text_of(early)
    assert 'name="courier"' not in text_of(early)
    too_soon = post(tech, path, {"courier": "Karl"})
    assert too_soon.status_code == 409
    assert alert_of(too_soon) == (
        f"Not sent Request {code} is approved; it cannot be handed over or shipped."
    )
    picked_all(app, people, code, tubes[:1])
    assert "1 tube(s) still on the pick list." in text_of(tech.get(path))
    refused = post(tech, path, {"courier": "Karl"})
    assert refused.status_code == 409
    assert alert_of(refused) == "Not sent Pick every tube on the list (or record it short) first."

    picked_all(app, people, code, tubes[1:])
    missing = post(tech, path, {"courier": " "})
    assert missing.status_code == 422
    assert alert_of(missing) == (
        "Not sent Name the courier, or the person who collects the material."
    )
    assert request_state(app, code) is RequestState.PICKING

    done = post(tech, path, {"courier": "Karl Collector", "logger_ref": ""}, follow=True)
    assert flashes(done, "success") == [
        f"Request {code}: 2 aliquot(s) handed over to Karl Collector."
    ]
    assert request_state(app, code) is RequestState.HANDED_OVER
    assert {state_of(app, t) for t in tubes} == {State.IN_TRANSIT}
    body = text_of(done)
    assert "Collected by" in body and "Karl Collector" in body and 'name="courier"' not in body
    manifest = "requests.manifest_pdf" in app.view_functions
    assert ('id="manifest-link"' in body) is manifest


def test_a_shipment_needs_its_conditions(app, people, bank):
    tubes = bank.tubes[(bank.pseudonyms[1], "D7")]
    code = approved(app, people, bank, tubes, delivery="shipment")
    picked_all(app, people, code, tubes)
    tech = browser(app, people["tech"])
    path = f"/requests/{code}/dispatch"
    assert "Ship 2 aliquot(s)" in text_of(tech.get(path))
    missing = post(tech, path, {"courier": "World Courier"})
    assert missing.status_code == 422
    assert alert_of(missing) == "Not sent Choose the shipping conditions."
    bad = post(tech, path, {"courier": "World Courier", "conditions": "lukewarm"})
    assert bad.status_code == 422
    done = post(
        tech,
        path,
        {
            "courier": "World Courier",
            "conditions": "dry_ice",
            "logger_ref": "LOG-7",
            "tracking_ref": "WC123",
        },
        follow=True,
    )
    assert flashes(done, "success") == [f"Request {code}: 2 aliquot(s) shipped with World Courier."]
    assert request_state(app, code) is RequestState.SHIPPED
    with app.app_context():
        shipped = lims_db.session().scalar(
            select(AliquotRequest).where(AliquotRequest.code == code)
        )
        assert (shipped.conditions.value, shipped.logger_ref, shipped.tracking_ref) == (
            "dry_ice",
            "LOG-7",
            "WC123",
        )


# -- who may, and what nobody sees -------------------------------------------------------------


def test_roles_and_sites(app, people, bank, make_user):
    tubes = bank.tubes[(bank.pseudonyms[0], "D0")]
    code = approved(app, people, bank, tubes)
    pages = [f"/requests/{code}/{page}" for page in ("review", "pick", "dispatch")]
    researcher = browser(app, bank.researcher)
    assert [researcher.get(p).status_code for p in pages] == [403, 403, 403]
    admin = browser(app, people["admin"])
    assert [admin.get(p).status_code for p in pages] == [403, 403, 403]
    tech = browser(app, people["tech"])
    assert [tech.get(p).status_code for p in pages] == [403, 200, 200]
    assert post(tech, pages[0], {"step": "start"}).status_code == 403
    other_manager = browser(app, make_user("manager", site_code="OUH"))
    assert [other_manager.get(p).status_code for p in pages] == [404, 404, 404]
    # A manager elsewhere who sits on the study's committee sees the request, but only to sign
    # for the committee: its review belongs to the site that serves it.
    board = make_user("manager", username="ouh.board", site_code="OUH")
    app.config["LIMS"]["requests"]["access_committee"] = {STUDY: ["ouh.board"]}
    pending = submitted(app, bank, bank.tubes[(bank.pseudonyms[1], "D0")])
    on_board = browser(app, board)
    assert on_board.get(f"/requests/{pending}/committee/{STUDY}").status_code == 200
    assert on_board.get(f"/requests/{pending}/review").status_code == 404
    assert post(on_board, f"/requests/{pending}/committee/{STUDY}", {}).status_code == 422
    assert post(on_board, f"/requests/{pending}/review", {"step": "start"}).status_code == 404
    assert request_state(app, pending) is RequestState.SUBMITTED
    other_tech = browser(app, people["elsewhere"])
    assert [other_tech.get(p).status_code for p in pages[1:]] == [404, 404]
    assert browser(app, people["manager"]).get("/requests/REQ-0000-00000/review").status_code == 404
    # A code typed in lower case goes to the page of the code as stored.
    moved = browser(app, people["manager"]).get(f"/requests/{code.lower()}/review")
    assert moved.status_code == 302 and moved.headers["Location"].endswith(pages[0])


def test_no_patient_identity_on_any_staff_page(app, people, bank):
    s1, s2, _ = bank.pseudonyms
    pending = submitted(app, bank, bank.tubes[(s2, "D28")])
    checked(app, people, pending, registered=[s2])
    tubes = bank.tubes[(s1, "D0")] + bank.tubes[(s1, "D7")]
    code = approved(app, people, bank, tubes)
    manager, tech = browser(app, people["manager"]), browser(app, people["tech"])
    bodies = [
        text_of(manager.get(f"/requests/{pending}/review")),
        text_of(manager.get(f"/requests/{code}/review")),
        text_of(tech.get(f"/requests/{code}/pick")),
    ]
    picked_all(app, people, code, tubes[:3])
    bodies.append(text_of(tech.get(f"/requests/{code}/pick")))
    post(
        tech,
        f"/requests/{code}/pick",
        {"step": "short", "item_code": tubes[3], "kind": "missing", "reason": "empty position"},
    )
    bodies.append(text_of(tech.get(f"/requests/{code}/dispatch")))
    bodies.append(
        text_of(post(tech, f"/requests/{code}/dispatch", {"courier": "Karl"}, follow=True))
    )
    assert s2 in bodies[0] and s1 in bodies[1] and s1 in bodies[-1]
    for body in bodies:
        assert_no_identity(bank, body)
