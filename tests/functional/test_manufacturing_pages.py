"""The manufacturing pages through the test client, as technicians, managers and refused roles."""

from __future__ import annotations

import re
from html import unescape

import pytest

from lims import db as lims_db
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.services import Move, find_item, perform_action
from lims.identifiers import eye_readable
from lims.manufacturing import services
from lims.manufacturing.overview import get_lot
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.people import actor, build_cast, cpr, new_episode


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def signed_in(app, person):
    """A client of its own, logged in as ``person``."""
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def new_coi(app, people, *, n: int = 1) -> str:
    """The Chain of Identity of a new episode of patient n (treated at RH)."""
    with app.app_context():
        session = lims_db.session()
        return new_episode(session, actor(session, people["tech"]), n=n).coi


def collection_in_manufacturing(app, people, coi: str) -> dict:
    """A collection of the episode taken at RH, received at AUH and in manufacturing there."""
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        item = production.register_collection(
            session, actor=tech, coi=coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        perform_action(
            session, actor=tech, code=item.code, action=Action.SHIP, move=Move(custodian="DHL")
        )
        for step in (Action.RECEIVE, Action.START_MANUFACTURING):
            perform_action(session, actor=maker, code=item.code, action=step)
        return {"code": item.code, "check": item.check_character}


def quarantined_lot(app, people, *, number="ACAD-1", n=1, qc=True) -> str:
    source = collection_in_manufacturing(app, people, new_coi(app, people, n=n))
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number=number,
            apheresis_codes=[source["code"]],
            bags=[production.BagSpec(volume_ml=40), production.BagSpec(volume_ml=40)],
        )
        services.quarantine_lot(session, actor=maker, lot_number=lot.lot_number)
        if qc:
            for test in app.config["LIMS"]["custody"]["required_qc"]:
                production.add_qc_result(
                    session, actor=maker, lot_number=number, test=test, value="ok", passed=True
                )
        return lot.lot_number


def bag_states(app, number: str) -> list[State]:
    with app.app_context():
        lot = get_lot(lims_db.session(), number)
        return [bag.state for bag in sorted(lot.bags, key=lambda b: b.id)]


def page_text(response) -> str:
    return unescape(response.get_data(as_text=True))


def words(response) -> str:
    """The page as a person reads it: tags dropped, white space collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def post(client, path: str, data: dict, *, page: str):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page)})


def release_data(witness: str, password: str = PASSWORD) -> dict:
    return {
        "release_password": PASSWORD,
        "witness_username": witness,
        "witness_password": password,
    }


# -- making a lot -----------------------------------------------------------------------------


def test_a_lot_from_two_scanned_collections(app, people):
    coi = new_coi(app, people)
    first = collection_in_manufacturing(app, people, coi)
    second = collection_in_manufacturing(app, people, coi)
    client = signed_in(app, people["maker"])
    form = client.get("/manufacturing/lots/new")
    assert form.status_code == 200
    html = form.get_data(as_text=True)
    scan = re.search(r"<input[^>]*data-scan-field[^>]*>", html).group(0)
    assert 'autocomplete="off"' in scan and "name=" not in scan  # the scan itself is not posted
    assert re.search(r'<textarea[^>]*name="apheresis_codes"', html)
    assert "manufacturing.js" in html and "<script>" not in html
    # What the scan list writes into the form: one scanned barcode per line.
    response = post(
        client,
        "/manufacturing/lots/new",
        {
            "lot_number": "acad-11",
            "apheresis_codes": f"={first['code']}00\n={second['code']}00\n",
            "bag_count": "2",
            "volume_ml": "42.5",
            "cells_per_bag": "2.5e8",
            "expires_at": "2099-06-01T12:00",
        },
        page="/manufacturing/lots/new",
    )
    assert response.status_code == 302, page_text(response)
    assert response.headers["Location"].endswith("/manufacturing/lots/ACAD-11")
    lot_page = client.get("/manufacturing/lots/ACAD-11")
    text = page_text(lot_page)
    assert lot_page.status_code == 200
    assert "Lot ACAD-11 registered with 2 bags." in text
    with app.app_context():
        session = lims_db.session()
        lot = get_lot(session, "ACAD-11")
        assert sorted(s.code for s in lot.sources) == sorted([first["code"], second["code"]])
        assert all(s.state is State.CONSUMED for s in lot.sources)
        bags = sorted(lot.bags, key=lambda b: b.id)
        assert [b.cell_count for b in bags] == [250_000_000, 250_000_000]
        # 12:00 in Copenhagen in June is 10:00 UTC.
        assert bags[0].expires_at.isoformat() == "2099-06-01T10:00:00+00:00"
        pseudonym = lot.episode.patient.pseudonym
        coi, coi_check = lot.episode.coi, lot.episode.coi_check
        dins = [(eye_readable(b.code), b.check_character) for b in bags]
    for din, check in dins:
        assert (
            f'<code>{din}</code> <span class="check-char" title="check character">{check}</span>'
            in lot_page.get_data(as_text=True)
        )
    assert eye_readable(coi) in text and f">{coi_check}</span>" in text
    assert pseudonym in text
    assert text.count("For autologous use only") == 2
    assert "2099-06-01 12:00" in text
    # Identity never shows here: not the name, not the CPR number.
    assert "Patient 1" not in text and cpr(1) not in text and cpr(1)[:6] not in text


def test_new_lot_refusals_keep_the_form_and_never_500(app, people):
    source = collection_in_manufacturing(app, people, new_coi(app, people))
    client = signed_in(app, people["maker"])
    base = {"lot_number": "ACAD-12", "bag_count": "1", "volume_ml": "40"}
    typed_without_check = post(
        client,
        "/manufacturing/lots/new",
        {**base, "apheresis_codes": source["code"]},
        page="/manufacturing/lots/new",
    )
    assert typed_without_check.status_code == 422
    assert "Type the DIN with its check character" in page_text(typed_without_check)
    assert 'value="ACAD-12"' in typed_without_check.get_data(as_text=True)
    for field, value in (("volume_ml", "lots"), ("bag_count", "99"), ("cells_per_bag", "many")):
        bad = post(
            client,
            "/manufacturing/lots/new",
            {**base, "apheresis_codes": f"={source['code']}00", field: value},
            page="/manufacturing/lots/new",
        )
        assert bad.status_code == 422, field
    nothing = post(client, "/manufacturing/lots/new", {**base, "apheresis_codes": ""}, page="/")
    assert nothing.status_code == 422
    assert "Scan the apheresis collections" in page_text(nothing)
    assert client.get("/manufacturing/lots/NOPE").status_code == 404
    with app.app_context():
        item = find_item(lims_db.session(), source["code"])
        assert item.state is State.IN_MANUFACTURING


# -- QC, holds and release ----------------------------------------------------------------------


def test_qc_entry_out_of_spec_banner_and_release_refused(app, people):
    number = quarantined_lot(app, people, qc=False)
    maker = signed_in(app, people["maker"])
    lot_path = f"/manufacturing/lots/{number}"
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        response = post(
            maker,
            f"{lot_path}/qc",
            {"test": test, "value": "ok", "unit": "", "specification": "", "passed": "yes"},
            page=lot_path,
        )
        assert response.status_code == 302, page_text(response)
    text = page_text(maker.get(lot_path))
    assert "Every required test has a result." in text and 'id="hold-banner"' not in text
    no_outcome = post(maker, f"{lot_path}/qc", {"test": "viability", "value": "61"}, page=lot_path)
    assert no_outcome.status_code == 422
    assert "Say whether the result is within specification." in page_text(no_outcome)
    out_of_spec = post(
        maker,
        f"{lot_path}/qc",
        {
            "test": "viability",
            "value": "61",
            "unit": "%",
            "specification": ">= 70 %",
            "passed": "no",
        },
        page=lot_path,
    )
    assert out_of_spec.status_code == 302
    text = page_text(maker.get(lot_path))
    banner = re.search(r'id="hold-banner">(.*?)</div>', text, re.S).group(1)
    assert "QC viability = 61 % (specification >= 70 %): out of specification" in banner
    assert "qc out of specification: viability = 61 %" in banner
    assert "QC failed or on hold" in text

    manager = signed_in(app, people["qp"])
    refused = post(
        manager, f"{lot_path}/release", release_data(people["maker"].username), page=lot_path
    )
    assert refused.status_code == 409
    text = page_text(refused)
    assert "Nothing was released." in text
    assert "QC out of specification: viability" in text
    assert bag_states(app, number) == [State.QUARANTINE, State.QUARANTINE]


def test_a_manager_releases_a_complete_lot_with_a_second_person(app, people):
    number = quarantined_lot(app, people)
    lot_path = f"/manufacturing/lots/{number}"
    manager = signed_in(app, people["qp"])
    text = page_text(manager.get(lot_path))
    assert 'id="release-form"' in text and 'name="witness_username"' in text
    reviewed = post(
        manager,
        f"{lot_path}/review",
        {"comment": "QC fine", "review_password": PASSWORD},
        page=lot_path,
    )
    assert reviewed.status_code == 302, page_text(reviewed)
    released = post(
        manager, f"{lot_path}/release", release_data(people["maker"].username), page=lot_path
    )
    assert released.status_code == 302, page_text(released)
    assert bag_states(app, number) == [State.RELEASED, State.RELEASED]
    page = manager.get(lot_path)
    text = words(page)
    assert "2 bags released." in text
    assert "Reviewed by Quinn Person" in text and "QC fine" in text
    assert text.count("by Quinn Person , second person Mads Maker") == 2
    assert 'id="release-form"' not in page_text(page)


def test_the_same_username_as_second_person_is_refused(app, people):
    number = quarantined_lot(app, people)
    lot_path = f"/manufacturing/lots/{number}"
    manager = signed_in(app, people["qp"])
    refused = post(
        manager, f"{lot_path}/release", release_data(people["qp"].username), page=lot_path
    )
    assert refused.status_code == 422
    assert "The second person must be someone else" in page_text(refused)
    assert bag_states(app, number) == [State.QUARANTINE, State.QUARANTINE]
    wrong = post(
        manager,
        f"{lot_path}/release",
        release_data(people["maker"].username, "not-the-password"),
        page=lot_path,
    )
    assert wrong.status_code == 422
    assert "Second person: Wrong username or password" in page_text(wrong)
    assert bag_states(app, number) == [State.QUARANTINE, State.QUARANTINE]


def test_a_technician_sees_no_release_form_and_cannot_post_one(app, people):
    number = quarantined_lot(app, people)
    lot_path = f"/manufacturing/lots/{number}"
    maker = signed_in(app, people["maker"])
    text = page_text(maker.get(lot_path))
    assert 'id="qc-entry"' in text
    assert 'id="release-form"' not in text and 'id="review-form"' not in text
    assert "A manager releases the lot" in text
    token = csrf_token(maker, lot_path)
    response = maker.post(
        f"{lot_path}/release",
        data={**release_data(people["qp"].username), "csrf_token": token},
    )
    assert response.status_code == 403
    review = maker.post(
        f"{lot_path}/review", data={"review_password": PASSWORD, "csrf_token": token}
    )
    assert review.status_code == 403
    assert bag_states(app, number) == [State.QUARANTINE, State.QUARANTINE]


def test_quarantine_button_moves_the_lots_bags(app, people):
    source = collection_in_manufacturing(app, people, new_coi(app, people))
    with app.app_context():
        session = lims_db.session()
        production.create_lot(
            session,
            actor=actor(session, people["maker"]),
            lot_number="ACAD-20",
            apheresis_codes=[source["code"]],
            bags=[production.BagSpec(volume_ml=30)] * 3,
        )
    maker = signed_in(app, people["maker"])
    lot_path = "/manufacturing/lots/ACAD-20"
    assert "Put 3 bags in quarantine" in page_text(maker.get(lot_path))
    response = post(maker, f"{lot_path}/quarantine", {}, page=lot_path)
    assert response.status_code == 302
    assert bag_states(app, "ACAD-20") == [State.QUARANTINE] * 3
    again = post(maker, f"{lot_path}/quarantine", {}, page=lot_path)
    assert again.status_code == 409
    assert "No bag of lot ACAD-20 is waiting for quarantine" in page_text(again)


def test_the_overview_lists_lots_by_status_and_waiting_collections(app, people):
    ready = quarantined_lot(app, people, number="ACAD-30", n=1)
    held = quarantined_lot(app, people, number="ACAD-31", n=2)
    spare = collection_in_manufacturing(app, people, new_coi(app, people, n=3))
    with app.app_context():
        session = lims_db.session()
        bag = get_lot(session, held).bags[0]
        holds.place_hold(
            session,
            actor=actor(session, people["qp"]),
            item=bag,
            reason="temperature_excursion",
            detail="logger alarm",
        )
    maker = signed_in(app, people["maker"])
    text = page_text(maker.get("/manufacturing"))
    ready_section = re.search(r'id="lots-ready">(.*?)</section>', text, re.S).group(1)
    held_section = re.search(r'id="lots-on_hold">(.*?)</section>', text, re.S).group(1)
    waiting = re.search(r'id="waiting">(.*?)</section>', text, re.S).group(1)
    assert ready in ready_section and held not in ready_section
    assert held in held_section
    assert eye_readable(spare["code"]) in waiting and "in manufacturing" in waiting


@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_researchers_and_admins_are_refused(app, people, role):
    number = quarantined_lot(app, people)
    client = signed_in(app, people[role])
    for path in ("/manufacturing", "/manufacturing/lots/new", f"/manufacturing/lots/{number}"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert number not in response.get_data(as_text=True)
