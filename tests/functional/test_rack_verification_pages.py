"""The rack-scanner verification pages through the test client, as each role."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Item
from lims.storage import services as storage
from lims.storage.verification_models import Finding, RackVerification, VerificationStatus
from tests.conftest import PASSWORD, csrf_token
from tests.functional.test_shipment_pages import browser, flashes, text_of
from tests.integration.people import actor, build_cast
from tests.integration.test_rack_verification import tubes
from tests.integration.test_storage import box, freezer

VERIFY = "/storage/boxes/BOX-1/verify"


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def stocked_box(app, people) -> list[str]:
    """BOX-1 at RH with three tubes in A1, A2, A3; their codes."""
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        placed = tubes(session, tech, 3)
        for index, tube in enumerate(placed, 1):
            storage.place_item(
                session, actor=tech, item_scan=tube.code, box_scan="BOX-1", position=f"A{index}"
            )
        return [tube.code for tube in placed]


def upload(client, data: bytes, name: str = "rackscan.csv"):
    return client.post(
        VERIFY,
        data={"csrf_token": csrf_token(client, VERIFY), "file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        follow_redirects=True,
    )


def report_id(response) -> int:
    match = re.fullmatch(r"/storage/verifications/(\d+)", response.request.path)
    assert match, response.request.path
    return int(match.group(1))


def cells(response) -> dict[str, str]:
    """Position name -> finding shown in the grid."""
    page = response.get_data(as_text=True)
    return dict(re.findall(r'data-position="(\w+)" data-finding="(\w+)"', page))


def stored_reports(app) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(RackVerification))


def test_a_technician_uploads_and_a_manager_accepts(app, people):
    a, b, c = stocked_box(app, people)
    tech = browser(app, people["tech"])
    page = tech.get(VERIFY)
    assert page.status_code == 200 and 'type="file"' in text_of(page)
    # a and b swapped, c gone, a foreign tube in B1.
    text = f"Rack ID: BOX-1\nPosition,Barcode\nA01,{b}\nA02,{a}\nB01,ALIEN7\n"
    response = upload(tech, text.encode())
    assert response.status_code == 200
    (warning,) = flashes(response, "error")
    assert "4 discrepancies in box BOX-1" in warning
    shown = cells(response)
    assert (shown["A1"], shown["A2"], shown["A3"], shown["B1"]) == (
        "misplaced",
        "misplaced",
        "missing",
        "unexpected",
    )
    assert shown["C5"] == "empty"
    body = text_of(response)
    assert "ALIEN7" in body and "unknown to the LIMS" in body
    assert "Accept and sign" not in body  # a technician does not accept
    verification_id = report_id(response)
    assert tech.post(f"/storage/verifications/{verification_id}/accept").status_code == 403

    manager = browser(app, people["manager"])
    page = manager.get(f"/storage/verifications/{verification_id}")
    assert "Accept and sign" in text_of(page)
    (missing_field,) = re.findall(r'name="(missing-\d+)" value="lost"', text_of(page))
    accept_path = f"/storage/verifications/{verification_id}/accept"
    token = csrf_token(manager, f"/storage/verifications/{verification_id}")
    refused = manager.post(
        accept_path,
        data={"csrf_token": token, "password": PASSWORD, "note": "checked"},
        follow_redirects=True,
    )
    assert any("Choose for" in message for message in flashes(refused, "error"))
    accepted = manager.post(
        accept_path,
        data={"csrf_token": token, "password": PASSWORD, "note": "checked", missing_field: "lost"},
        follow_redirects=True,
    )
    (done,) = flashes(accepted, "success")
    assert "2 tube(s) recorded where the scanner read them, 1 recorded lost" in done
    assert "moved to A1" in text_of(accepted) and "Accepted" in text_of(accepted)
    with app.app_context():
        session = lims_db.session()
        by_code = {i.code: i for i in session.scalars(select(Item).where(Item.code.in_([a, b, c])))}
        assert (by_code[a].position, by_code[b].position) == (2, 1)
        assert by_code[c].state is State.LOST
        report = session.get(RackVerification, verification_id)
        assert report.status is VerificationStatus.ACCEPTED and report.note == "checked"
        moves = session.scalar(
            select(func.count())
            .select_from(CustodyEvent)
            .where(CustodyEvent.signature_id == report.signature_id)
        )
        assert moves == 3  # two moves and one loss, each under the manager's signature


def test_a_clean_scan_says_so(app, people):
    a, b, c = stocked_box(app, people)
    tech = browser(app, people["tech"])
    response = upload(tech, f"A1;{a}\nA2;{b}\nA3;{c}\nA4;NO TUBE\n".encode())
    (message,) = flashes(response, "success")
    assert "Box BOX-1 is as recorded" in message and "3 matched" in message
    assert set(cells(response).values()) == {"matched", "empty"}
    assert "Discrepancies (0)" in text_of(response)


def test_a_malformed_upload_shows_every_error_and_stores_nothing(app, people):
    a, b, _ = stocked_box(app, people)
    tech = browser(app, people["tech"])
    response = upload(tech, f"A1,{a}\nA1,{b}\nZZ9,X\n\x07\n".encode())
    assert response.status_code == 422
    body = text_of(response)
    assert "The file was not read: nothing was stored" in body
    assert "line 2: position A1 again (first on line 1)" in body
    assert "line 3: 'ZZ9' is not a position (A1 or A01)" in body
    assert 'type="file"' in body  # may try again
    wrong_rack = upload(tech, f"Rack ID: BOX-9\nA1,{a}\n".encode())
    assert wrong_rack.status_code == 422
    assert any("scan of rack BOX-9, not of box BOX-1" in m for m in flashes(wrong_rack, "error"))
    outside = upload(tech, f"J1,{a}\n".encode())
    assert "line 1: J1 is outside this box (A1–I9)." in text_of(outside)
    no_file = tech.post(
        VERIFY, data={"csrf_token": csrf_token(tech, VERIFY)}, follow_redirects=True
    )
    assert "Choose the rack scanner's file." in " ".join(flashes(no_file, "error"))
    assert stored_reports(app) == 0


def test_a_researcher_and_another_site_are_refused(app, people):
    a, _, _ = stocked_box(app, people)
    tech = browser(app, people["tech"])
    verification_id = report_id(upload(tech, f"A1,{a}\n".encode()))
    researcher = browser(app, people["researcher"])
    for path in (VERIFY, f"/storage/verifications/{verification_id}"):
        assert researcher.get(path).status_code == 403
    assert researcher.post(f"/storage/verifications/{verification_id}/accept").status_code == 403
    other_manager = browser(app, people["qp"])  # a manager at AUH
    assert other_manager.get(f"/storage/verifications/{verification_id}").status_code == 403
    assert other_manager.get(VERIFY).status_code == 403
    assert stored_reports(app) == 1


def test_pages_carry_no_inline_script_or_style(app, people):
    a, _, _ = stocked_box(app, people)
    tech = browser(app, people["tech"])
    report = upload(tech, f"A1,{a}\nA2,NO READ\n".encode())
    assert cells(report)["A2"] == Finding.UNREADABLE.value
    for page in (tech.get(VERIFY), report):
        body = page.get_data(as_text=True)
        assert "style=" not in body and " onclick" not in body
        assert re.search(r"<script(?![^>]*\bsrc=)", body) is None
        assert "storage.css" in body
