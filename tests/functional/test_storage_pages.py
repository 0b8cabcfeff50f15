"""The storage pages through the test client: set-up, box maps, placing and filling by scan with
undo, moves, evacuation, finding by code, and who may see what."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Hold, Item
from lims.storage.models import Box, StorageUnit
from tests.functional.test_shipment_pages import browser, flashes, post, text_of
from tests.integration.people import actor, build_cast
from tests.integration.test_storage import box, freezer, tubes


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


@pytest.fixture
def stocked(app, people):
    """RH's -80 freezer with rack R1 and box BOX-1 (9x9), and four registered plasma tubes."""
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        return [item.code for item in tubes(session, tech, 4)]


def state_of(app, code: str) -> tuple[State, int | None, int | None]:
    with app.app_context():
        item = lims_db.session().scalar(select(Item).where(Item.code == code))
        return item.state, item.box_id, item.position


def event_count(app) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(CustodyEvent))


def test_a_manager_sets_up_a_freezer_and_a_technician_adds_a_box(app, people):
    manager = browser(app, people["manager"])
    page = post(
        manager,
        "/storage/units/new",
        {"code": "rh-ln2-1", "name": "LN2 tank 1", "unit_type": "ln2_tank",
         "temperature_class": "ln2_vapour"},
        form_page="/storage/units/new",
    )
    assert "Storage unit RH-LN2-1 created." in flashes(page, "success")
    page = post(
        manager,
        "/storage/units/RH-LN2-1/racks",
        {"code": "RH-LN2-1-T1", "kind": "tower", "ordinal": "1"},
        form_page="/storage/units/RH-LN2-1",
    )
    assert "Rack RH-LN2-1-T1 added." in flashes(page, "success")
    tech = browser(app, people["tech"])
    assert tech.get("/storage/units/RH-LN2-1/edit").status_code == 403
    assert browser(app, people["researcher"]).get("/storage/units/new").status_code == 403
    page = post(
        tech,
        "/storage/units/RH-LN2-1/boxes",
        {"code": "CAS-1", "label": "Bag cassettes", "rack": "RH-LN2-1-T1",
         "box_type": "cassette-5", "ordinal": "1"},
        form_page="/storage/units/RH-LN2-1",
    )
    assert "Box CAS-1 added." in flashes(page, "success")
    assert page.request.path == "/storage/boxes/CAS-1"
    page = post(
        tech,
        "/storage/units/RH-LN2-1/boxes",
        {"code": "CAN-1", "rack": "", "box_type": "container", "capacity": "", "ordinal": "1"},
        form_page="/storage/units/RH-LN2-1",
    )
    assert any("capacity" in message for message in flashes(page, "error"))
    page = post(
        manager,
        "/storage/racks/RH-LN2-1-T1/edit",
        {"kind": "rack", "ordinal": "2", "reason": "renumbered"},
        form_page="/storage/racks/RH-LN2-1-T1",
    )
    assert "RH-LN2-1-T1 saved." in flashes(page, "success") and "place 2" in text_of(page)
    assert tech.post("/storage/racks/RH-LN2-1-T1/edit").status_code == 403
    unit_page = text_of(tech.get("/storage/units/RH-LN2-1"))
    assert "CAS-1" in unit_page and "0 / 5" in unit_page
    assert "RH-LN2-1" in text_of(tech.get("/storage"))


def test_placing_by_scan_shows_the_box_and_refuses_an_occupied_position(app, people, stocked):
    tech = browser(app, people["tech"])
    first, second = stocked[:2]
    page = post(
        tech, "/storage/place", {"item": first, "box": "BOX-1", "position": "c02"},
        form_page="/storage/place",
    )
    assert f"{first} stored: RH-F80-1 / RH-F80-1-R1 / BOX-1 / C2." in flashes(page, "success")
    assert f'data-position="C2" data-code="{first}"' in page.get_data(as_text=True)
    assert state_of(app, first)[0] is State.STORED
    before = event_count(app)
    token_page = "/storage/place"
    refused = tech.post(
        "/storage/place",
        data={"item": second, "box": "BOX-1", "position": "C2",
              "csrf_token": re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                                      tech.get(token_page).get_data(as_text=True)).group(1)},
    )
    assert refused.status_code == 409
    assert f"BOX-1 C2 holds {first} already." in text_of(refused)
    assert "data-alert" in refused.get_data(as_text=True)
    assert event_count(app) == before
    assert state_of(app, second) == (State.REGISTERED, None, None)


def test_filling_a_box_goes_on_after_the_last_tube_and_undo_takes_it_back(app, people, stocked):
    tech = browser(app, people["tech"])
    a, b = stocked[:2]
    page = post(tech, "/storage/boxes/BOX-1/fill", {"item": a, "position": "A5"},
                form_page="/storage/boxes/BOX-1/fill")
    assert state_of(app, a)[2] == 5
    assert "Next: <strong class=\"next-position\">A6</strong>" in page.get_data(as_text=True)
    after = re.search(r'name="after" value="(\d+)"', page.get_data(as_text=True)).group(1)
    assert after == "5"
    page = post(tech, "/storage/boxes/BOX-1/fill", {"item": b, "after": after},
                form_page=page.request.full_path)
    assert state_of(app, b)[2] == 6  # after the last, not the first gap (A1)
    html = page.get_data(as_text=True)
    assert f"Undo: {b}" in html
    event = re.search(r'name="event" type="hidden" value="(\d+)"', html) or re.search(
        r'id="event" name="event" type="hidden" value="(\d+)"', html
    )
    assert event, "the undo form carries the placement's event"
    page = post(tech, "/storage/undo",
                {"item": b, "event": event.group(1), "back": "/storage/boxes/BOX-1/fill"},
                form_page="/storage/boxes/BOX-1/fill")
    assert f"Undone: {b} is registered, in no box." in flashes(page, "success")
    assert state_of(app, b) == (State.REGISTERED, None, None)
    with app.app_context():
        actions = lims_db.session().scalars(
            select(CustodyEvent.action)
            .join(Item, Item.id == CustodyEvent.item_id)
            .where(Item.code == b)
            .order_by(CustodyEvent.id)
        ).all()
    assert actions == ["register", "store", "undo_store"]
    # Undo twice is refused: the tube's last step is the undo itself.
    page = post(tech, "/storage/undo",
                {"item": b, "event": event.group(1), "back": "/storage/boxes/BOX-1/fill"},
                form_page="/storage/boxes/BOX-1/fill")
    assert any("another step since" in message for message in flashes(page, "error"))
    # Someone else cannot undo Tina's placement of a.
    with app.app_context():
        event_a = lims_db.session().scalar(
            select(CustodyEvent.id).join(Item, Item.id == CustodyEvent.item_id)
            .where(Item.code == a).order_by(CustodyEvent.id.desc()).limit(1)
        )
    other = browser(app, people["tech2"])
    page = post(other, "/storage/undo", {"item": a, "event": str(event_a), "back": "/storage/"},
                form_page="/storage/place")
    assert any("Only the person who placed" in message for message in flashes(page, "error"))
    assert state_of(app, a)[0] is State.STORED


def test_undo_of_a_move_puts_the_tube_back_where_it_was(app, people, stocked):
    tech = browser(app, people["tech"])
    a = stocked[0]
    post(tech, "/storage/place", {"item": a, "box": "BOX-1", "position": "A1"},
         form_page="/storage/place")
    page = post(tech, "/storage/place", {"item": a, "box": "BOX-1", "position": "I9"},
                form_page="/storage/place")
    assert state_of(app, a)[2] == 81
    html = page.get_data(as_text=True)
    event = re.search(r'name="event" type="hidden" value="(\d+)"', html).group(1)
    page = post(tech, "/storage/undo", {"item": a, "event": event, "back": "/storage/place"},
                form_page="/storage/place")
    assert f"Undone: {a} is back in RH-F80-1 / RH-F80-1-R1 / BOX-1 / A1." in flashes(
        page, "success"
    )
    assert state_of(app, a)[0] is State.STORED and state_of(app, a)[2] == 1


def test_the_box_map_shows_every_position_and_find_jumps_to_the_tube(app, people, stocked):
    tech = browser(app, people["tech"])
    a = stocked[0]
    post(tech, "/storage/place", {"item": a, "box": "BOX-1", "position": "B4"},
         form_page="/storage/place")
    page = tech.get(f"/storage/find?q={a}", follow_redirects=True)
    assert page.request.path == "/storage/boxes/BOX-1"
    html = page.get_data(as_text=True)
    assert html.count('role="gridcell"') == 81
    assert re.search(rf'class="cell mt-plasma st-stored here"[^>]*data-position="B4" '
                     rf'data-code="{a}"', html)
    assert "1</strong> of 81 taken, 80 free" in html
    for code, path in (("box-1", "/storage/boxes/BOX-1"), ("RH-F80-1-R1", "/storage/racks/"
                       "RH-F80-1-R1"), ("RH-F80-1", "/storage/units/RH-F80-1")):
        assert tech.get(f"/storage/find?q={code}", follow_redirects=True).request.path == path
    page = tech.get(f"/storage/find?q={stocked[1]}", follow_redirects=True)
    assert "has no place in a box: it is registered" in text_of(page)
    page = tech.get("/storage/find?q=NOPE-123", follow_redirects=True)
    assert "Nothing has the identifier or storage code NOPE-123." in flashes(page, "error")


def test_a_box_move_and_an_evacuation_take_the_content_along(app, people, stocked):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        freezer(session, manager, code="RH-F80-2")
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
    tech = browser(app, people["tech"])
    for code, position in zip(stocked[:3], ("A1", "A2", "A3"), strict=True):
        post(tech, "/storage/place", {"item": code, "box": "BOX-1", "position": position},
             form_page="/storage/place")
    page = post(tech, "/storage/boxes/BOX-1/move",
                {"unit": "RH-F80-2", "rack": "RH-F80-2-R1", "reason": "defrosting"},
                form_page="/storage/boxes/BOX-1")
    assert "Box moved with 3 items." in flashes(page, "success")
    assert 'href="/storage/racks/RH-F80-2-R1"' in page.get_data(as_text=True)
    with app.app_context():
        item = lims_db.session().scalar(select(Item).where(Item.code == stocked[0]))
        assert item.location == "RH-F80-2 / RH-F80-2-R1 / BOX-1 / A1"
    # Plasma may not go to -20 °C: the evacuation is refused and nothing moves.
    before = event_count(app)
    page = post(tech, "/storage/units/RH-F80-2/evacuate",
                {"to_unit": "RH-F20-1", "reason": "compressor failed"},
                form_page="/storage/units/RH-F80-2/evacuate")
    assert page.status_code == 409 and "Nothing moved" in text_of(page)
    assert event_count(app) == before
    page = post(tech, "/storage/units/RH-F80-2/evacuate",
                {"to_unit": "RH-F80-1", "reason": "compressor failed"},
                form_page="/storage/units/RH-F80-2/evacuate")
    assert any("evacuated into RH-F80-1: 1 racks, 1 boxes, 3 items moved" in message
               for message in flashes(page, "success"))
    assert event_count(app) == before + 3
    with app.app_context():
        session = lims_db.session()
        assert session.scalar(select(StorageUnit.active).where(StorageUnit.code == "RH-F80-2")) \
            is False
        moved = session.scalar(select(Box).where(Box.code == "BOX-1"))
        assert moved.unit.code == "RH-F80-1"
        assert [item.position for item in session.scalars(
            select(Item).where(Item.box_id == moved.id).order_by(Item.position))] == [1, 2, 3]
    # Into the -20 °C unit anyway, knowingly: the plasma goes on hold for review.
    post(tech, "/storage/units/RH-F80-1/evacuate",
         {"to_unit": "RH-F20-1", "reason": "both failed", "accept_warmer": "y"},
         form_page="/storage/units/RH-F80-1/evacuate")
    with app.app_context():
        held = lims_db.session().scalar(
            select(func.count()).select_from(Hold).where(Hold.cleared_at.is_(None))
        )
    assert held == 3


def test_storage_is_for_bench_staff_of_the_site(app, people, stocked):
    researcher = browser(app, people["researcher"])
    for path in ("/storage", "/storage/boxes/BOX-1", "/storage/place", "/storage/find?q=BOX-1"):
        assert researcher.get(path).status_code == 403
    elsewhere = browser(app, people["elsewhere"])
    assert elsewhere.get("/storage/boxes/BOX-1").status_code == 403
    assert elsewhere.get("/storage/units/RH-F80-1").status_code == 403
    assert "RH-F80-1" not in text_of(elsewhere.get("/storage"))
    tech = browser(app, people["tech"])
    assert tech.get("/storage/units/RH-F80-1/edit").status_code == 403
    assert tech.get("/storage/boxes/NOPE").status_code == 404


def test_hand_made_forms_get_a_clear_answer_not_a_server_error(app, people, stocked):
    tech = browser(app, people["tech"])
    a = stocked[0]
    page = post(tech, "/storage/boxes/BOX-1/fill", {"item": a, "after": "-5"},
                form_page="/storage/boxes/BOX-1/fill")
    assert page.status_code == 200 and state_of(app, a)[2] == 1
    page = post(tech, "/storage/undo", {"item": a, "event": "\u00b2", "back": "/storage/place"},
                form_page="/storage/place")
    assert "Nothing to undo." in flashes(page, "error")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      tech.get("/storage/place").get_data(as_text=True)).group(1)
    refused = tech.post("/storage/place", data={"item": stocked[1], "box": "BOX-1",
                                                "position": "\u00b2", "csrf_token": token})
    assert refused.status_code == 422 and "is not a position of this box" in text_of(refused)
