"""The shipment pages through the test client, as the people at each end of a shipment."""

from __future__ import annotations

import html
import io
import re

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, HoldReason, Item
from lims.custody.services import Move, perform_action
from lims.shipments.models import LineStatus, Shipment, ShipmentLine, ShipmentState
from lims.shipments.models import TemperatureReading as Reading
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.people import actor, build_cast, new_episode, second_person


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def browser(app, person):
    """A client logged in as ``person`` (one per person: both ends work at the same time)."""
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response, category: str) -> list[str]:
    page = response.get_data(as_text=True)
    found = re.findall(rf'<div class="flash flash-{category}"[^>]*>(.*?)</div>', page, re.S)
    return [html.unescape(message) for message in found]


def post(client, path: str, data: dict, *, form_page: str):
    token = csrf_token(client, form_page)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=True)


def din_scan(code: str) -> str:
    return f"={code}00"


def collections(app, people, count: int, *, patient: int = 1) -> list[str]:
    """Apheresis collections registered at RH (Tina Tech's site)."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=patient)
        return [
            production.register_collection(
                session,
                actor=tech,
                coi=episode.coi,
                volume_ml=200,
                collected_at=lims_db.utcnow(),
            ).code
            for _ in range(count)
        ]


def released_bag_at_auh(app, people) -> str:
    """A bag of an RH patient, made and released at AUH (after test_custody_services)."""
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        episode = new_episode(session, tech, n=7)
        source = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        perform_action(
            session, actor=tech, code=source.code, action=Action.SHIP, move=Move(custodian="c")
        )
        for step in (Action.RECEIVE, Action.START_MANUFACTURING):
            perform_action(session, actor=maker, code=source.code, action=step)
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number="L-7",
            apheresis_codes=[source.code],
            bags=[production.BagSpec(volume_ml=40)],
        )
        bag = lot.bags[0].code
        perform_action(session, actor=maker, code=bag, action=Action.QUARANTINE)
        for test in app.config["LIMS"]["custody"]["required_qc"]:
            production.add_qc_result(
                session, actor=maker, lot_number="L-7", test=test, value="ok", passed=True
            )
        perform_action(
            session,
            actor=actor(session, people["qp"]),
            code=bag,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        return bag


def new_shipment(client, to_site: str, **fields) -> tuple[str, object]:
    response = post(
        client,
        "/shipments/new",
        {"to_site": to_site, "conditions": "fresh", **fields},
        form_page="/shipments/new",
    )
    assert response.status_code == 200, text_of(response)
    code = response.request.path.rsplit("/", 1)[1]
    assert code.startswith("SH")
    return code, response


def add(client, code: str, scan: str, container: str = ""):
    page = f"/shipments/{code}"
    return post(client, f"{page}/lines", {"scan": scan, "container": container}, form_page=page)


def dispatch(client, code: str, courier: str = "Blood courier", logger_ref: str = "LOG-1"):
    page = f"/shipments/{code}"
    return post(
        client,
        f"{page}/dispatch",
        {"courier": courier, "tracking_ref": "TR-9", "logger_ref": logger_ref},
        form_page=page,
    )


def scan(client, code: str, text: str):
    page = f"/shipments/{code}"
    return post(client, f"{page}/receipt/scan", {"scan": text}, form_page=page)


def complete(client, code: str, note: str = "", **witness):
    page = f"/shipments/{code}"
    return post(client, f"{page}/receipt/complete", {"note": note, **witness}, form_page=page)


def upload(client, code: str, data: bytes, name: str = "logger.csv"):
    page = f"/shipments/{code}"
    token = csrf_token(client, page)
    return client.post(
        f"{page}/logger",
        data={"csrf_token": token, "file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        follow_redirects=True,
    )


def item_state(app, code: str) -> tuple[State, str]:
    with app.app_context():
        item = lims_db.session().scalar(select(Item).where(Item.code == code))
        return item.state, item.site.code


def sent_to_auh(app, people, codes: list[str], logger_ref: str = "LOG-1") -> str:
    tech = browser(app, people["tech"])
    code, _ = new_shipment(tech, "AUH")
    for item in codes:
        assert flashes(add(tech, code, din_scan(item)), "success")
    assert flashes(dispatch(tech, code, logger_ref=logger_ref), "success")
    return code


# -- the whole journey ------------------------------------------------------------------------


def test_receipt_with_a_missing_and_an_unexpected_item_through_the_pages(app, people):
    arrives, lost, stray = collections(app, people, 3)
    tech = browser(app, people["tech"])
    form = text_of(tech.get("/shipments/new"))
    assert 'value="AUH"' in form and 'value="RH"' not in form  # not to its own site
    code, response = new_shipment(tech, "AUH", logger_ref="LOG-1")
    assert flashes(response, "success") == [f"Shipment {code} created: scan what goes in it."]
    field = re.search(r'<input[^>]*name="scan"[^>]*>', response.get_data(as_text=True)).group(0)
    for attribute in ("data-scan-field", 'autocomplete="off"', "autofocus"):
        assert attribute in field
    assert "Scan a bag or tube to add" in text_of(response)

    response = add(tech, code, din_scan(arrives), container="dry shipper 2")
    assert flashes(response, "success") == [f"{arrives} added to shipment {code}."]
    assert "dry shipper 2" in text_of(response)
    assert flashes(add(tech, code, din_scan(arrives)), "info") == [
        f"{arrives} is on this shipment already; nothing changed."
    ]
    add(tech, code, din_scan(lost))
    response = dispatch(tech, code)
    assert flashes(response, "success") == [
        f"Shipment {code} dispatched with Blood courier: 2 item(s) in transit to AUH."
    ]
    assert 'name="scan"' not in response.get_data(as_text=True)  # the sender scans no more
    assert item_state(app, arrives) == (State.IN_TRANSIT, "RH")

    maker = browser(app, people["maker"])
    assert code in text_of(maker.get("/shipments"))
    lower = maker.get(f"/shipments/{code.lower()}")
    assert lower.status_code == 302 and lower.headers["Location"].endswith(f"/shipments/{code}")
    page = maker.get(f"/shipments/{code}")
    field = re.search(r'<input[^>]*name="scan"[^>]*>', page.get_data(as_text=True)).group(0)
    assert "data-scan-field" in field and 'autocomplete="off"' in field

    response = scan(maker, code, din_scan(arrives))
    assert flashes(response, "success") == [f"{arrives} ✓ received (1 of 2 scanned)."]
    assert f'class="line-received" id="line-{arrives}"' in response.get_data(as_text=True)
    assert flashes(scan(maker, code, din_scan(arrives)), "info")
    response = scan(maker, code, din_scan(stray))
    (loud,) = flashes(response, "error")
    assert loud.startswith(f"UNEXPECTED: {stray} was not sent in shipment {code}.")
    assert f'class="line-unexpected" id="line-{stray}"' in response.get_data(as_text=True)
    assert f'class="line-expected" id="line-{lost}"' in response.get_data(as_text=True)
    assert "1 still expected" in text_of(response) and "1 unexpected" in text_of(response)
    (bad,) = flashes(scan(maker, code, "=<E7644V00"), "error")
    assert "product code" in bad

    (refusal,) = flashes(complete(maker, code), "error")
    assert "1 missing and 1 unexpected: write a note" in refusal
    assert item_state(app, arrives) == (State.IN_TRANSIT, "RH")

    response = complete(maker, code, note="One bag missing, a stray bag came along.")
    assert flashes(response, "success") == ["Receipt complete: 1 item(s) received."]
    assert "1 missing and 1 unexpected" in flashes(response, "error")[0]
    page = text_of(response)
    for words in (
        "Discrepancies",
        "Missing (sent, never scanned on arrival)",
        "Unexpected (scanned on arrival, not sent)",
        "One bag missing, a stray bag came along.",
    ):
        assert words in page
    assert item_state(app, arrives) == (State.RECEIVED_FOR_MANUFACTURING, "AUH")
    assert item_state(app, lost) == (State.IN_TRANSIT, "RH")
    assert item_state(app, stray) == (State.COLLECTED, "RH")
    with app.app_context():
        session = lims_db.session()
        shipment = session.scalar(select(Shipment).where(Shipment.code == code))
        assert shipment.state is ShipmentState.RECEIVED
        statuses = {line.scanned_code: line.status for line in shipment.lines}
        assert statuses == {
            arrives: LineStatus.RECEIVED,
            lost: LineStatus.MISSING,
            stray: LineStatus.UNEXPECTED,
        }
    assert code in text_of(maker.get("/shipments"))  # now under recently received


def test_new_shipment_with_an_item_from_the_bench(app, people):
    (item,) = collections(app, people, 1)
    tech = browser(app, people["tech"])
    form = text_of(tech.get(f"/shipments/new?item={item}"))
    assert f'name="item" type="hidden" value="{item}"' in form
    code, response = new_shipment(tech, "AUH", item=item)
    assert f"{item} added to shipment {code}." in flashes(response, "success")
    with app.app_context():
        lines = lims_db.session().scalars(select(ShipmentLine.scanned_code)).all()
    assert lines == [item]


def test_a_refused_new_shipment_keeps_the_form(app, people):
    tech = browser(app, people["tech"])
    response = tech.post(
        "/shipments/new",
        data={
            "to_site": "",
            "conditions": "fresh",
            "csrf_token": csrf_token(tech, "/shipments/new"),
        },
    )
    assert response.status_code == 422
    assert flashes(response, "error") and "New shipment from RH" in text_of(response)


def test_dispatch_refused_for_one_held_item_dispatches_nothing(app, people):
    fine, held = collections(app, people, 2)
    tech = browser(app, people["tech"])
    code, _ = new_shipment(tech, "AUH")
    add(tech, code, din_scan(fine))
    add(tech, code, din_scan(held))
    with app.app_context():
        session = lims_db.session()
        item = session.scalar(select(Item).where(Item.code == held))
        holds.place_hold(
            session,
            actor=actor(session, people["tech"]),
            item=item,
            reason="other",
            detail="bag leaking",
        )
    (refusal,) = flashes(dispatch(tech, code), "error")
    assert held in refusal and "on hold" in refusal and "Nothing was dispatched" in refusal
    assert item_state(app, fine) == (State.COLLECTED, "RH")


def test_removing_an_item_while_packing(app, people):
    kept, removed = collections(app, people, 2)
    tech = browser(app, people["tech"])
    code, _ = new_shipment(tech, "AUH")
    add(tech, code, din_scan(kept))
    add(tech, code, din_scan(removed))
    page = f"/shipments/{code}"
    response = post(tech, f"{page}/lines/remove", {"code": removed}, form_page=page)
    assert flashes(response, "success") == [f"{removed} taken off the shipment."]
    assert f'id="line-{removed}"' not in response.get_data(as_text=True)
    assert f'id="line-{kept}"' in response.get_data(as_text=True)


# -- second person and sites ---------------------------------------------------------------------


def test_a_product_bag_received_at_its_treating_site_needs_another_person(app, people):
    bag = released_bag_at_auh(app, people)
    maker = browser(app, people["maker"])
    code, _ = new_shipment(maker, "RH")
    add(maker, code, din_scan(bag))
    dispatch(maker, code)

    tech = browser(app, people["tech"])
    response = scan(tech, code, din_scan(bag))
    assert 'name="witness_username"' in response.get_data(as_text=True)
    (refusal,) = flashes(
        complete(tech, code, witness_username=people["tech"].username, witness_password=PASSWORD),
        "error",
    )
    assert "someone else" in refusal
    assert item_state(app, bag)[0] is State.IN_TRANSIT
    response = complete(
        tech, code, witness_username=people["tech2"].username, witness_password=PASSWORD
    )
    assert flashes(response, "success") == ["Receipt complete: 1 item(s) received."]
    assert item_state(app, bag) == (State.RECEIVED, "RH")
    with app.app_context():
        event = lims_db.session().scalar(
            select(CustodyEvent)
            .join(Item, Item.id == CustodyEvent.item_id)
            .where(Item.code == bag, CustodyEvent.action == "receive")
        )
        assert event.witness_signature.user_id == people["tech2"].id


def test_only_the_destination_scans_and_other_sites_see_nothing(app, people):
    (item,) = collections(app, people, 1)
    code = sent_to_auh(app, people, [item])
    tech = browser(app, people["tech"])  # the sender, at RH
    page = text_of(tech.get(f"/shipments/{code}"))
    assert "In transit to AUH" in page and 'name="scan"' not in page
    response = tech.post(
        f"/shipments/{code}/receipt/scan",
        data={"scan": din_scan(item), "csrf_token": csrf_token(tech, f"/shipments/{code}")},
        follow_redirects=True,
    )
    (refusal,) = flashes(response, "error")
    assert refusal.startswith(f"Shipment {code} goes to AUH")

    elsewhere = browser(app, people["elsewhere"])  # OUH
    assert elsewhere.get(f"/shipments/{code}").status_code == 403
    assert code not in text_of(elsewhere.get("/shipments"))
    assert elsewhere.get("/shipments/SHRH999").status_code == 404


@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_researchers_and_admins_are_refused(app, people, role):
    (item,) = collections(app, people, 1)
    code = sent_to_auh(app, people, [item])
    client = browser(app, people[role])
    for path in ("/shipments", "/shipments/new", f"/shipments/{code}"):
        assert client.get(path).status_code == 403, path


# -- temperature logger -------------------------------------------------------------------------

EXCURSION = "Time;Temperature (°C)\n01.03.2025 10:00;4,5\n01.03.2025 10:05;11,25\n".encode(
    "latin-1"
)


def test_a_logger_file_with_an_excursion_puts_the_items_on_hold(app, people):
    items = collections(app, people, 2)
    code = sent_to_auh(app, people, items, logger_ref="LOG-42")
    maker = browser(app, people["maker"])
    page = maker.get(f"/shipments/{code}").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and 'type="file"' in page

    response = upload(maker, code, EXCURSION, name="log42.csv")
    assert flashes(response, "success") == [
        "2 readings stored: 4.50 to 11.25 °C, 1 outside the limits."
    ]
    (alarm,) = flashes(response, "error")
    assert alarm.startswith("TEMPERATURE EXCURSION") and all(item in alarm for item in items)
    page = response.get_data(as_text=True)
    assert '<details class="readings">' in page and 'class="reading-out"' in page
    assert "11.25" in page and "log42.csv" in page
    assert 'type="file"' not in page  # once per shipment
    with app.app_context():
        session = lims_db.session()
        for code_ in items:
            item = session.scalar(select(Item).where(Item.code == code_))
            (hold,) = holds.open_holds(session, item.id)
            assert hold.reason is HoldReason.TEMPERATURE_EXCURSION and "LOG-42" in hold.detail
    (again,) = flashes(upload(maker, code, EXCURSION), "error")
    assert "uploaded already" in again


def test_a_logger_file_inside_the_limits_holds_nothing(app, people):
    items = collections(app, people, 1)
    code = sent_to_auh(app, people, items)
    maker = browser(app, people["maker"])
    response = upload(maker, code, b"timestamp,temp\n2025-03-01T10:00:00+01:00,3.5\n")
    assert flashes(response, "success") == [
        "1 readings stored: 3.50 to 3.50 °C, 0 outside the limits."
    ]
    assert flashes(response, "error") == []
    with app.app_context():
        session = lims_db.session()
        item = session.scalar(select(Item).where(Item.code == items[0]))
        assert holds.open_holds(session, item.id) == []


def test_a_bad_logger_file_is_refused_line_by_line(app, people):
    items = collections(app, people, 1)
    code = sent_to_auh(app, people, items)
    maker = browser(app, people["maker"])
    response = upload(maker, code, b"time;temp\n01.03.2025 10:00;5\n01.03.2025 10:05;hot\n")
    (refusal,) = flashes(response, "error")
    assert "nothing was stored" in refusal and "line 3: 'hot' is not a temperature" in refusal
    assert 'type="file"' in response.get_data(as_text=True)  # may try again
    (missing,) = flashes(
        maker.post(
            f"/shipments/{code}/logger",
            data={"csrf_token": csrf_token(maker, f"/shipments/{code}")},
            follow_redirects=True,
        ),
        "error",
    )
    assert "Choose the logger's CSV file." in missing
    (too_big,) = flashes(upload(maker, code, b"2025-03-01 10:00,5\n" * 300_000), "error")
    assert "at most 5 MB" in too_big
    with app.app_context():
        assert lims_db.session().scalar(select(func.count()).select_from(Reading)) == 0


def test_pages_carry_no_inline_script_or_style(app, people):
    items = collections(app, people, 1)
    code = sent_to_auh(app, people, items)
    maker = browser(app, people["maker"])
    for path in ("/shipments", "/shipments/new", f"/shipments/{code}"):
        page = maker.get(path).get_data(as_text=True)
        assert "style=" not in page and " onclick" not in page, path
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None, path
        assert "shipments.css" in page


def test_a_shipment_being_packed_is_cancelled_with_a_reason_and_its_items_are_free(app, people):
    (code,) = collections(app, people, 1)
    tech = browser(app, people["tech"])
    shipment, _ = new_shipment(tech, "AUH", courier="Blood courier")
    add(tech, shipment, din_scan(code))
    page = f"/shipments/{shipment}"
    refused = post(tech, f"{page}/cancel", {"reason": ""}, form_page=page)
    assert any("Reason" in message for message in flashes(refused, "error"))
    other_site = browser(app, people["maker"])
    assert any(
        "Only staff at RH" in message
        for message in flashes(
            post(other_site, f"{page}/cancel", {"reason": "not ours"}, form_page=page), "error"
        )
    )
    done = post(tech, f"{page}/cancel", {"reason": "patient's collection postponed"},
                form_page=page)
    assert f"Shipment {shipment} cancelled; its items can go in another one." in flashes(
        done, "success"
    )
    with app.app_context():
        session = lims_db.session()
        record = session.scalar(select(Shipment).where(Shipment.code == shipment))
        assert record.state is ShipmentState.CANCELLED
        (row,) = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "cancel", AuditEntry.field == "state")
        )
        assert (row.old_value, row.new_value) == ("packing", "cancelled")
        assert row.reason == "patient's collection postponed"
    assert item_state(app, code)[0] is State.COLLECTED  # nothing to undo: it never left
    again = post(tech, f"{page}/cancel", {"reason": "twice"}, form_page=page)
    assert any("is cancelled" in message for message in flashes(again, "error"))
    # The collection goes in a new shipment.
    second, _ = new_shipment(tech, "AUH", courier="Blood courier")
    assert flashes(add(tech, second, din_scan(code)), "error") == []
