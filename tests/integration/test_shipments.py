"""Shipments against a real database: packing, dispatch, receipt, reconciliation, logger."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims import identifiers
from lims.audit.models import AuditEntry, ESignature
from lims.auth.models import User
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Hold, HoldReason, Item, ProductLot
from lims.custody.services import Move, perform_action
from lims.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationError
from lims.shipments import excursions, receipt
from lims.shipments import services as shipping
from lims.shipments.logger import LoggerFileError
from lims.shipments.models import LineStatus, Shipment, ShipmentLine, ShipmentState
from lims.shipments.models import TemperatureReading as Reading
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode, second_person

# -- building material (after tests/integration/test_custody_services.py) ----------------------


def walk(session, who, code, *steps, **options):
    for step in steps:
        perform_action(session, actor=who, code=code, action=step, **options)


def collection(session, person, episode) -> Item:
    """An apheresis collection registered at the person's site (a new DIN of that site)."""
    return production.register_collection(
        session, actor=person, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )


def din_scan(item: Item) -> str:
    """What a scanner sends for the DIN barcode: '=', the DIN and two flag digits."""
    return f"={item.code}00"


def quarantined_lot(app, session, people, episode) -> ProductLot:
    tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
    source = collection(session, tech, episode)
    walk(session, tech, source.code, Action.SHIP, move=Move(custodian="courier"))
    walk(session, maker, source.code, Action.RECEIVE, Action.START_MANUFACTURING)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=f"L-{episode.id}",
        apheresis_codes=[source.code],
        bags=[production.BagSpec(volume_ml=40)],
    )
    for bag in lot.bags:
        walk(session, maker, bag.code, Action.QUARANTINE)
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        production.add_qc_result(
            session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
        )
    return lot


def released_bag(app, session, people, episode) -> Item:
    """A bag of the episode released at AUH (the manufacturer), ready to ship to RH."""
    bag = quarantined_lot(app, session, people, episode).bags[0]
    perform_action(
        session,
        actor=actor(session, people["qp"]),
        code=bag.code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    return bag


def packed(session, person, to_site, items, **fields) -> Shipment:
    shipment = shipping.create_shipment(
        session, actor=person, to_site_code=to_site, conditions="fresh", **fields
    )
    for item in items:
        shipping.add_to_shipment(
            session, actor=person, shipment_code=shipment.code, scan=din_scan(item)
        )
    return shipment


def sent(session, person, to_site, items, logger_ref="LOG-7") -> Shipment:
    shipment = packed(session, person, to_site, items)
    return shipping.dispatch_shipment(
        session,
        actor=person,
        shipment_code=shipment.code,
        courier="Blood courier",
        logger_ref=logger_ref,
    )


def state_of(session, item) -> State:
    return session.scalar(select(Item.state).where(Item.id == item.id))


def count(session, model, *criteria) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*criteria))


def audit_rows(session, entity, entity_id, action=None) -> list[AuditEntry]:
    query = select(AuditEntry).where(
        AuditEntry.entity == entity, AuditEntry.entity_id == str(entity_id)
    )
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query.order_by(AuditEntry.seq)))


def committed(app) -> dict:
    """What is committed, read on a connection of its own (not the test's session)."""
    with app.extensions["lims_engine"].connect() as connection:
        counted = {
            model.__tablename__: connection.scalar(select(func.count()).select_from(model))
            for model in (CustodyEvent, ESignature, AuditEntry, Hold, ShipmentLine, Reading)
        }
        counted["items"] = sorted(
            connection.execute(select(Item.id, Item.state, Item.site_id, Item.version)).all()
        )
        counted["shipments"] = sorted(
            connection.execute(select(Shipment.id, Shipment.state, Shipment.version)).all()
        )
        counted["lines"] = sorted(
            connection.execute(select(ShipmentLine.id, ShipmentLine.status)).all()
        )
        return counted


# -- creating and packing ---------------------------------------------------------------------


def test_a_shipment_code_is_site_number_and_check_character(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        first = shipping.create_shipment(
            session, actor=tech, to_site_code="auh", conditions="fresh", logger_ref=" LOG-1 "
        )
        second = shipping.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="ambient"
        )
        assert first.code == "SHRH000001" + identifiers.mod37_2_check_character("SHRH000001")
        assert second.code.startswith("SHRH000002")
        assert (first.state, first.from_site.code, first.to_site.code) == (
            ShipmentState.PACKING,
            "RH",
            "AUH",
        )
        assert first.logger_ref == "LOG-1"
        (row,) = audit_rows(session, "shipment", first.id, "create")
        assert json.loads(row.new_value)["code"] == first.code and row.actor == tech.username
        assert shipping.get_shipment(session, first.code.lower()).id == first.id


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"to_site_code": "RH"}, ValidationError, "another site"),
        ({"to_site_code": ""}, ValidationError, "Choose the site"),
        ({"to_site_code": "XX"}, NotFound, "No site"),
        ({"conditions": "warm"}, ValidationError, "shipping conditions"),
        ({"courier": "x" * 201}, ValidationError, "at most 200"),
    ],
)
def test_a_shipment_needs_another_site_and_known_conditions(app, people, fields, error, words):
    with app.app_context():
        session = lims_db.session()
        values = {"to_site_code": "AUH", "conditions": "fresh"} | fields
        with pytest.raises(error, match=words):
            shipping.create_shipment(session, actor=actor(session, people["tech"]), **values)
        assert count(session, Shipment) == 0


def test_researchers_and_admins_handle_no_shipments(app, people):
    with app.app_context():
        session = lims_db.session()
        for person in ("researcher", "admin"):
            with pytest.raises(Forbidden):
                shipping.create_shipment(
                    session,
                    actor=actor(session, people[person]),
                    to_site_code="AUH",
                    conditions="fresh",
                )


def test_packing_takes_a_din_scan_once_and_refuses_what_cannot_ship(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        episode = new_episode(session, tech)
        first, held = collection(session, tech, episode), collection(session, tech, episode)
        shipment = shipping.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="fresh"
        )
        code = shipment.code
        outcome = shipping.add_to_shipment(
            session, actor=tech, shipment_code=code, scan=din_scan(first), container="box 1"
        )
        assert outcome.kind == "added" and outcome.line.container == "box 1"
        (row,) = audit_rows(session, "shipment_line", outcome.line.id, "create")
        assert json.loads(row.new_value)["status"] == "expected"
        before = committed(app)
        typed = f"{first.code} {first.check_character}"  # typed by hand: with its check character
        again = shipping.add_to_shipment(session, actor=tech, shipment_code=code, scan=typed)
        assert again.kind == "already_added" and "already" in again.message
        assert committed(app) == before

        holds.place_hold(session, actor=tech, item=held, reason="other", detail="label smudged")
        with pytest.raises(InvalidTransition, match=f"{held.code} cannot be shipped: .*on hold"):
            shipping.add_to_shipment(session, actor=tech, shipment_code=code, scan=din_scan(held))

        bag_episode = new_episode(session, tech, n=2)
        bag = quarantined_lot(app, session, people, bag_episode).bags[0]
        from_auh = shipping.create_shipment(
            session, actor=maker, to_site_code="RH", conditions="ln2_vapour"
        )
        with pytest.raises(InvalidTransition, match="Cannot ship material that is quarantine"):
            shipping.add_to_shipment(
                session, actor=maker, shipment_code=from_auh.code, scan=din_scan(bag)
            )
        with pytest.raises(Conflict, match=f"{bag.code} is at AUH, not at RH"):
            shipping.add_to_shipment(session, actor=tech, shipment_code=code, scan=din_scan(bag))
        with pytest.raises(Forbidden, match="Only staff at RH"):
            shipping.add_to_shipment(session, actor=maker, shipment_code=code, scan=first.code)
        other = shipping.create_shipment(
            session, actor=tech, to_site_code="OUH", conditions="fresh"
        )
        with pytest.raises(Conflict, match=f"on shipment {code}"):
            shipping.add_to_shipment(
                session, actor=tech, shipment_code=other.code, scan=din_scan(first)
            )
        typo = first.code + ("A" if first.check_character != "A" else "B")
        with pytest.raises(ValidationError, match="check character"):
            shipping.add_to_shipment(session, actor=tech, shipment_code=code, scan=typo)
        with pytest.raises(NotFound, match="No shipment"):
            shipping.add_to_shipment(session, actor=tech, shipment_code="SHRH999", scan=first.code)


def test_removing_a_line_while_packing_leaves_an_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        kept, removed = collection(session, tech, episode), collection(session, tech, episode)
        shipment = packed(session, tech, "AUH", [kept, removed])
        line_id = session.scalar(select(ShipmentLine.id).where(ShipmentLine.item_id == removed.id))
        assert (
            shipping.remove_from_shipment(
                session, actor=tech, shipment_code=shipment.code, scan=removed.code
            )
            == removed.code
        )
        assert session.get(ShipmentLine, line_id).status is LineStatus.REMOVED
        (row,) = audit_rows(session, "shipment_line", line_id, "remove")
        assert (row.field, row.old_value, row.new_value) == ("status", "expected", "removed")
        assert removed.code in row.reason and shipment.code in row.reason
        session.expire_all()
        assert [line.item_id for line in session.get(Shipment, shipment.id).lines] == [kept.id]
        with pytest.raises(NotFound, match="is not on shipment"):
            shipping.remove_from_shipment(
                session, actor=tech, shipment_code=shipment.code, scan=removed.code
            )
        shipping.add_to_shipment(
            session, actor=tech, shipment_code=shipment.code, scan=f"={removed.code}00"
        )
        assert session.get(ShipmentLine, line_id).status is LineStatus.EXPECTED
        shipping.remove_from_shipment(
            session, actor=tech, shipment_code=shipment.code, scan=removed.code
        )
        shipping.dispatch_shipment(
            session, actor=tech, shipment_code=shipment.code, courier="Courier"
        )
        assert session.get(Item, removed.id).state is State.COLLECTED  # it never left
        with pytest.raises(Conflict, match="in transit"):
            shipping.remove_from_shipment(
                session, actor=tech, shipment_code=shipment.code, scan=kept.code
            )


# -- dispatch ---------------------------------------------------------------------------------


def test_dispatch_ships_every_item_to_the_courier_with_the_logger(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        items = [collection(session, tech, episode) for _ in range(2)]
        shipment = packed(session, tech, "AUH", items, courier="")
        with pytest.raises(ValidationError, match="Name the courier"):
            shipping.dispatch_shipment(
                session, actor=tech, shipment_code=shipment.code, courier=" "
            )
        shipping.dispatch_shipment(
            session,
            actor=tech,
            shipment_code=shipment.code,
            courier="DHL",
            tracking_ref="TR-1",
            logger_ref="LOG-9",
        )
        session.expire_all()
        shipment = shipping.get_shipment(session, shipment.code)
        assert shipment.state is ShipmentState.IN_TRANSIT
        assert (shipment.courier, shipment.tracking_ref, shipment.logger_ref) == (
            "DHL",
            "TR-1",
            "LOG-9",
        )
        assert shipment.dispatched_by_id == tech.id and shipment.dispatched_at is not None
        for item in items:
            (event,) = session.scalars(
                select(CustodyEvent).where(
                    CustodyEvent.item_id == item.id, CustodyEvent.action == "ship"
                )
            )
            assert (event.to_state, event.to_custodian) == ("in_transit", "DHL")
            assert event.temperature_logger_ref == "LOG-9"
            assert event.to_location == f"shipment {shipment.code}"
        assert audit_rows(session, "shipment", shipment.id, "dispatch")
        with pytest.raises(Conflict, match="in transit"):
            shipping.dispatch_shipment(
                session, actor=tech, shipment_code=shipment.code, courier="x"
            )


def test_an_empty_shipment_is_not_dispatched(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        shipment = shipping.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="fresh"
        )
        with pytest.raises(ValidationError, match="at least one"):
            shipping.dispatch_shipment(
                session, actor=tech, shipment_code=shipment.code, courier="x"
            )


def test_dispatch_is_all_or_nothing(app, people):
    """One item put on hold after packing refuses the whole dispatch, with its message."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        fine, held = collection(session, tech, episode), collection(session, tech, episode)
        shipment = packed(session, tech, "AUH", [fine, held])
        holds.place_hold(session, actor=tech, item=held, reason="other", detail="bag leaking")
        before = committed(app)
        with pytest.raises(InvalidTransition) as refused:
            shipping.dispatch_shipment(
                session, actor=tech, shipment_code=shipment.code, courier="DHL"
            )
        message = refused.value.message
        assert held.code in message and "on hold" in message and "bag leaking" in message
        assert "Nothing was dispatched" in message
        assert committed(app) == before
        assert state_of(session, fine) is State.COLLECTED
        assert shipping.get_shipment(session, shipment.code).state is ShipmentState.PACKING


# -- receipt ----------------------------------------------------------------------------------


def test_receipt_with_a_missing_and_an_unexpected_item(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        episode = new_episode(session, tech)
        arrives, lost, stray = (collection(session, tech, episode) for _ in range(3))
        shipment = sent(session, tech, "AUH", [arrives, lost])
        code = shipment.code

        outcome = receipt.scan_on_receipt(
            session, actor=maker, shipment_code=code.lower(), scan=din_scan(arrives)
        )
        assert outcome.kind == "received" and not outcome.loud
        assert "1 of 2" in outcome.message
        assert outcome.line.scanned_by_id == maker.id and outcome.line.scanned_at is not None
        assert audit_rows(session, "shipment_line", outcome.line.id, "scan_on_receipt")
        assert state_of(session, arrives) is State.IN_TRANSIT  # custody waits for completion

        before = committed(app)
        again = receipt.scan_on_receipt(
            session, actor=maker, shipment_code=code, scan=din_scan(arrives)
        )
        assert again.kind == "already_scanned" and "already" in again.message
        assert committed(app) == before

        ours = receipt.scan_on_receipt(
            session, actor=maker, shipment_code=code, scan=din_scan(stray)
        )
        assert ours.kind == "unexpected" and ours.loud and "UNEXPECTED" in ours.message
        assert ours.line.item_id == stray.id and ours.line.status is LineStatus.UNEXPECTED
        foreign = receipt.scan_on_receipt(
            session, actor=maker, shipment_code=code, scan="=A99992112345600"
        )
        assert (
            foreign.kind == "unexpected" and "not an identifier of this system" in foreign.message
        )
        assert (foreign.line.item_id, foreign.line.scanned_code) == (None, "A99992112345600"[:13])
        before = committed(app)
        repeated = receipt.scan_on_receipt(
            session, actor=maker, shipment_code=code, scan="=A99992112345600"
        )
        assert repeated.kind == "unexpected_again" and repeated.loud
        assert committed(app) == before

        found = receipt.reconciliation(shipping.get_shipment(session, code))
        assert [line.item_id for line in found.received] == [arrives.id]
        assert [line.item_id for line in found.missing] == [lost.id]
        assert {line.scanned_code for line in found.unexpected} == {stray.code, "A999921123456"}

        before = committed(app)
        with pytest.raises(ValidationError, match="1 missing and 2 unexpected: write a note"):
            receipt.complete_receipt(session, actor=maker, shipment_code=code, note="  ")
        assert committed(app) == before

        note = "Second bag not in the box; a stray RH bag was packed by mistake."
        done = receipt.complete_receipt(session, actor=maker, shipment_code=code, note=note)
        assert (len(done.received), len(done.missing), len(done.unexpected)) == (1, 1, 2)
        session.expire_all()
        received = session.get(Item, arrives.id)
        assert received.state is State.RECEIVED_FOR_MANUFACTURING
        assert (received.site.code, received.custodian) == ("AUH", "Mads Maker")
        (event,) = session.scalars(
            select(CustodyEvent).where(
                CustodyEvent.item_id == arrives.id, CustodyEvent.action == "receive"
            )
        )
        assert event.user_id == maker.id and event.from_custodian == "Blood courier"
        assert state_of(session, lost) is State.IN_TRANSIT  # missing: stays in transit
        assert state_of(session, stray) is State.COLLECTED  # unexpected: only a record
        lost_line = session.scalar(select(ShipmentLine).where(ShipmentLine.item_id == lost.id))
        assert lost_line.status is LineStatus.MISSING
        (row,) = audit_rows(session, "shipment_line", lost_line.id, "mark_missing")
        assert (row.field, row.old_value, row.new_value, row.reason) == (
            "status",
            "expected",
            "missing",
            note,
        )
        shipment = shipping.get_shipment(session, code)
        assert shipment.state is ShipmentState.RECEIVED and shipment.receipt_note == note
        assert shipment.received_by_id == maker.id and shipment.received_at is not None
        assert audit_rows(session, "shipment", shipment.id, "complete_receipt")[0].reason == note
        with pytest.raises(Conflict, match="received"):
            receipt.scan_on_receipt(session, actor=maker, shipment_code=code, scan=din_scan(lost))


def test_a_complete_receipt_needs_no_note(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        item = collection(session, tech, new_episode(session, tech))
        shipment = sent(session, tech, "AUH", [item])
        receipt.scan_on_receipt(
            session, actor=maker, shipment_code=shipment.code, scan=din_scan(item)
        )
        found = receipt.complete_receipt(session, actor=maker, shipment_code=shipment.code)
        assert found.complete and state_of(session, item) is State.RECEIVED_FOR_MANUFACTURING
        assert shipping.get_shipment(session, shipment.code).receipt_note is None


def test_scanning_at_a_site_that_is_not_the_destination_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        item = collection(session, tech, new_episode(session, tech))
        shipment = sent(session, tech, "AUH", [item])
        before = committed(app)
        for person in ("elsewhere", "tech"):  # OUH, and the sender at RH
            with pytest.raises(Forbidden, match="goes to AUH"):
                receipt.scan_on_receipt(
                    session,
                    actor=actor(session, people[person]),
                    shipment_code=shipment.code,
                    scan=din_scan(item),
                )
            with pytest.raises(Forbidden, match="goes to AUH"):
                receipt.complete_receipt(
                    session,
                    actor=actor(session, people[person]),
                    shipment_code=shipment.code,
                    note="x",
                )
        assert committed(app) == before


def test_a_malformed_scan_or_the_shipment_label_is_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        item = collection(session, tech, new_episode(session, tech))
        shipment = sent(session, tech, "AUH", [item])
        before = committed(app)
        for scan, words in [
            ("=<E7644V00", "product code"),
            (item.code, "check character"),  # a typed DIN without its check character
            ("", "Scan or type"),
            ("box #3!", "not a bag or tube"),
            (shipment.code, "shipment's own label"),
        ]:
            with pytest.raises(ValidationError, match=words):
                receipt.scan_on_receipt(
                    session, actor=maker, shipment_code=shipment.code, scan=scan
                )
        assert committed(app) == before


def test_a_product_bag_at_its_treating_site_needs_another_person(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        bag = released_bag(app, session, people, new_episode(session, tech))
        shipment = sent(session, maker, "RH", [bag])
        receipt.scan_on_receipt(
            session, actor=tech, shipment_code=shipment.code, scan=din_scan(bag)
        )
        assert receipt.receipt_needs_second_person(session, shipment, tech)
        before = committed(app)
        with pytest.raises(ValidationError, match="someone else"):
            receipt.complete_receipt(
                session,
                actor=tech,
                shipment_code=shipment.code,
                witness_username=people["tech"].username,
                witness_password=PASSWORD,
            )
        with pytest.raises(ValidationError, match="needs a second person"):
            receipt.complete_receipt(session, actor=tech, shipment_code=shipment.code)
        assert committed(app) == before
        with pytest.raises(ValidationError, match="Second person: Wrong username or password"):
            receipt.complete_receipt(
                session,
                actor=tech,
                shipment_code=shipment.code,
                witness_username=people["tech2"].username,
                witness_password="wrong",
            )
        assert session.get(User, people["tech2"].id).failed_logins == 1  # counted, committed
        assert state_of(session, bag) is State.IN_TRANSIT

        receipt.complete_receipt(
            session,
            actor=tech,
            shipment_code=shipment.code,
            witness_username=people["tech2"].username,
            witness_password=PASSWORD,
        )
        session.expire_all()
        assert state_of(session, bag) is State.RECEIVED
        (event,) = session.scalars(
            select(CustodyEvent).where(
                CustodyEvent.item_id == bag.id, CustodyEvent.action == "receive"
            )
        )
        assert event.user_id == tech.id and event.to_site_id == session.get(User, tech.id).site_id
        assert event.witness_signature is not None
        assert event.witness_signature.user_id == people["tech2"].id
        assert event.witness_signature.comment == "second person"


def test_an_apheresis_at_the_manufacturer_needs_no_second_person(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        item = collection(session, tech, new_episode(session, tech))
        shipment = sent(session, tech, "AUH", [item])
        assert not receipt.receipt_needs_second_person(session, shipment, maker)
        receipt.scan_on_receipt(
            session, actor=maker, shipment_code=shipment.code, scan=din_scan(item)
        )
        receipt.complete_receipt(session, actor=maker, shipment_code=shipment.code)
        event = session.scalar(
            select(CustodyEvent).where(
                CustodyEvent.item_id == item.id, CustodyEvent.action == "receive"
            )
        )
        assert event.witness_signature_id is None


# -- temperature logger -----------------------------------------------------------------------

EXCURSION = (
    "Time;Temperature (°C)\n"
    "01.03.2025 10:00;4,5\n"
    "01.03.2025 10:05;11,25\n"
    "01.03.2025 10:10;9,0\n"
    "01.03.2025 10:15;5,0\n"
).encode("latin-1")
INSIDE = b"timestamp,temp\n2025-03-01T10:00:00+01:00,3.5\n2025-03-01T10:05:00+01:00,7.9\n"


def in_transit_to_auh(session, people, n: int = 1, items: int = 2) -> tuple[Shipment, list[Item]]:
    tech = actor(session, people["tech"])
    episode = new_episode(session, tech, n=n)
    sent_items = [collection(session, tech, episode) for _ in range(items)]
    return sent(session, tech, "AUH", sent_items, logger_ref="LOG-42"), sent_items


def test_a_logger_excursion_puts_the_items_on_hold(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        shipment, items = in_transit_to_auh(session, people)
        summary = excursions.upload_logger_csv(
            session,
            actor=maker,
            shipment_code=shipment.code,
            data=EXCURSION,
            filename="C:\\loggers\\log42.csv",
            zone="Europe/Copenhagen",
        )
        assert (summary.readings, summary.excursions) == (4, 2)
        assert (str(summary.minimum), str(summary.maximum)) == ("4.50", "11.25")
        assert sorted(summary.held) == sorted(item.code for item in items)
        session.expire_all()
        shipment = shipping.get_shipment(session, shipment.code)
        assert shipment.logger_file_name == "log42.csv"
        assert shipment.logger_excursions == 2 and shipment.logger_uploaded_at is not None
        assert (str(shipment.logger_min_c), str(shipment.logger_max_c)) == ("4.50", "11.25")
        stored = excursions.readings_of(session, shipment)
        assert [str(r.celsius) for r in stored] == ["4.50", "11.25", "9.00", "5.00"]
        assert stored[0].at.isoformat() == "2025-03-01T09:00:00+00:00"
        for item in items:
            (hold,) = holds.open_holds(session, item.id)
            assert hold.reason is HoldReason.TEMPERATURE_EXCURSION
            assert "2 of 4 logger readings outside 2.0 to 8.0 °C" in hold.detail
            assert "most extreme 11.25 °C at 2025-03-01 10:05 (Europe/Copenhagen)" in hold.detail
            assert "logger LOG-42" in hold.detail and shipment.code in hold.detail
            assert audit_rows(session, "hold", hold.id, "create")
        (row,) = audit_rows(session, "shipment", shipment.id, "upload_logger")[:1]
        assert row.reason == "4 readings from log42.csv"
        with pytest.raises(Conflict, match="uploaded already"):
            excursions.upload_logger_csv(
                session, actor=maker, shipment_code=shipment.code, data=INSIDE, filename="b.csv"
            )
        # A held item cannot be received into manufacturing use: receiving works, starting not.
        for item in items:
            receipt.scan_on_receipt(
                session, actor=maker, shipment_code=shipment.code, scan=din_scan(item)
            )
        receipt.complete_receipt(session, actor=maker, shipment_code=shipment.code)
        with pytest.raises(InvalidTransition, match="on hold"):
            perform_action(
                session, actor=maker, code=items[0].code, action=Action.START_MANUFACTURING
            )


def test_a_logger_inside_the_limits_holds_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        shipment, _ = in_transit_to_auh(session, people)
        summary = excursions.upload_logger_csv(
            session, actor=maker, shipment_code=shipment.code, data=INSIDE, filename="ok.csv"
        )
        assert (summary.readings, summary.excursions, summary.held) == (2, 0, [])
        assert count(session, Hold) == 0
        assert shipping.get_shipment(session, shipment.code).logger_excursions == 0


def test_material_limits_win_over_the_conditions(app, people):
    app.config["LIMS"]["shipping"]["limits_by_material"] = {"leukapheresis": {"fresh": [1, 12]}}
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        shipment, _ = in_transit_to_auh(session, people)
        summary = excursions.upload_logger_csv(
            session, actor=maker, shipment_code=shipment.code, data=EXCURSION, filename="l.csv"
        )
        assert (summary.excursions, summary.held) == (0, [])
        assert count(session, Hold) == 0


def test_logger_parse_errors_are_reported_per_line_and_nothing_is_stored(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        shipment, _ = in_transit_to_auh(session, people)
        bad = (
            b"time;temp\n01.03.2025 10:00;5,0\n31.02.2025 10:05;5,1\nsoon;5,2\n"
            b"01.03.2025 10:15;warm\n"
        )
        before = committed(app)
        with pytest.raises(LoggerFileError) as refused:
            excursions.upload_logger_csv(
                session, actor=maker, shipment_code=shipment.code, data=bad, filename="bad.csv"
            )
        assert [p.split(":")[0] for p in refused.value.problems] == ["line 3", "line 4", "line 5"]
        assert "nothing was stored" in refused.value.message
        assert committed(app) == before
        assert shipping.get_shipment(session, shipment.code).logger_uploaded_at is None
        # The corrected file is still accepted: a refused file does not count as the upload.
        excursions.upload_logger_csv(
            session, actor=maker, shipment_code=shipment.code, data=INSIDE, filename="good.csv"
        )
        assert count(session, Reading) == 2


def test_the_logger_file_waits_for_dispatch_and_is_for_the_two_sites(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        item = collection(session, tech, new_episode(session, tech))
        shipment = packed(session, tech, "AUH", [item])
        with pytest.raises(Conflict, match="in transit or received"):
            excursions.upload_logger_csv(
                session, actor=tech, shipment_code=shipment.code, data=INSIDE, filename="a.csv"
            )
        shipping.dispatch_shipment(session, actor=tech, shipment_code=shipment.code, courier="x")
        with pytest.raises(Forbidden, match="Only staff at RH or AUH"):
            excursions.upload_logger_csv(
                session,
                actor=actor(session, people["elsewhere"]),
                shipment_code=shipment.code,
                data=INSIDE,
                filename="a.csv",
            )
        # The sender may upload it too (a logger read out before the box is opened).
        assert (
            excursions.upload_logger_csv(
                session, actor=tech, shipment_code=shipment.code, data=INSIDE, filename="a.csv"
            ).readings
            == 2
        )


def test_shipments_of_a_site(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
        episode = new_episode(session, tech)
        first, second = collection(session, tech, episode), collection(session, tech, episode)
        packing = packed(session, tech, "AUH", [first])
        moving = sent(session, tech, "AUH", [second])
        lists = shipping.shipments_of_site(session, session.get(User, tech.id).site_id)
        assert {s.code for s in lists.outgoing} == {packing.code, moving.code}
        assert lists.incoming == [] and lists.received == []
        at_auh = shipping.shipments_of_site(session, maker.site_id)
        assert [s.code for s in at_auh.incoming] == [moving.code]
        receipt.scan_on_receipt(
            session, actor=maker, shipment_code=moving.code, scan=din_scan(second)
        )
        receipt.complete_receipt(session, actor=maker, shipment_code=moving.code)
        at_auh = shipping.shipments_of_site(session, maker.site_id)
        assert at_auh.incoming == [] and [s.code for s in at_auh.received] == [moving.code]


def test_a_logger_file_uploaded_after_receipt_still_holds_the_items(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        shipment, items = in_transit_to_auh(session, people, items=1)
        receipt.scan_on_receipt(
            session, actor=maker, shipment_code=shipment.code, scan=din_scan(items[0])
        )
        receipt.complete_receipt(session, actor=maker, shipment_code=shipment.code)
        summary = excursions.upload_logger_csv(
            session, actor=maker, shipment_code=shipment.code, data=EXCURSION, filename="l.csv"
        )
        assert summary.held == [items[0].code]
        assert state_of(session, items[0]) is State.RECEIVED_FOR_MANUFACTURING
        (hold,) = holds.open_holds(session, items[0].id)
        assert hold.reason is HoldReason.TEMPERATURE_EXCURSION
