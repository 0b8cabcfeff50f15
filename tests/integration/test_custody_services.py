"""The custody services against a real database: guards, holds, audit rows, aliquoting, scans."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims import identifiers
from lims.audit import services as audit
from lims.audit.models import AuditEntry, ESignature
from lims.custody import bedside, holds, production
from lims.custody.domain import Action, Kind, State
from lims.custody.models import (
    BedsideCheck,
    CustodyEvent,
    Hold,
    HoldReason,
    Item,
    ProductLot,
    QcResult,
)
from lims.custody.services import Move, find_item, lineage, perform_action, perform_many
from lims.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationError
from tests.conftest import PASSWORD
from tests.integration.people import actor, cpr, new_episode, second_person


def walk(session, who, code, *steps, **options):
    for step in steps:
        perform_action(session, actor=who, code=code, action=step, **options)


def collection_in_manufacturing(session, people, episode) -> Item:
    tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
    collection = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )
    walk(session, tech, collection.code, Action.SHIP, move=Move(custodian="courier"))
    walk(session, maker, collection.code, Action.RECEIVE, Action.START_MANUFACTURING)
    return collection


def quarantined_lot(app, session, people, episode, *, bags=1, qc=True) -> ProductLot:
    maker = actor(session, people["maker"])
    collection = collection_in_manufacturing(session, people, episode)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=f"L-{episode.id}",
        apheresis_codes=[collection.code],
        bags=[production.BagSpec(volume_ml=40) for _ in range(bags)],
    )
    for bag in lot.bags:
        walk(session, maker, bag.code, Action.QUARANTINE)
    if qc:
        for test in app.config["LIMS"]["custody"]["required_qc"]:
            production.add_qc_result(
                session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
            )
    return lot


def issued_bag(app, session, people, episode, *, receiver="tech") -> Item:
    """A released bag shipped to, received and issued by ``receiver``."""
    maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
    bag = quarantined_lot(app, session, people, episode).bags[0]
    perform_action(
        session,
        actor=qp,
        code=bag.code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    walk(session, maker, bag.code, Action.SHIP, move=Move(custodian="courier"))
    receiving = actor(session, people[receiver])
    witness = second_person(session, people["manager" if receiver == "tech" else "tech"])
    walk(session, receiving, bag.code, Action.RECEIVE, witness=witness)
    walk(session, receiving, bag.code, Action.ISSUE)
    return bag


def verified_bag(app, session, people, episode) -> Item:
    tech = actor(session, people["tech"])
    bag = issued_bag(app, session, people, episode)
    walk(session, tech, bag.code, Action.THAW)
    bedside.bedside_check(
        session,
        actor=tech,
        bag_scan=bag.code,
        coi_scan=f"&/{episode.coi}",
        wristband_scan=cpr(episode.patient_id),
        witness_username=people["tech2"].username,
        witness_password=PASSWORD,
    )
    return bag


def stored_sample(session, tech, episode, *, quantity=10, unit="mL") -> Item:
    sample = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type="whole_blood",
        quantity=quantity,
        unit=unit,
        collected_at=lims_db.utcnow(),
        timepoint="D7",
        timepoint_day=7,
    )
    walk(session, tech, sample.code, Action.STORE, move=Move(location="-80 freezer 1"))
    return sample


def count(session, model, *criteria) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*criteria))


def committed(app) -> dict:
    """What is committed, read on a connection of its own (not the test's session)."""
    with app.extensions["lims_engine"].connect() as connection:
        counted = {
            model.__tablename__: connection.scalar(select(func.count()).select_from(model))
            for model in (Item, CustodyEvent, ESignature, AuditEntry, Hold, ProductLot)
        }
        counted["items"] = sorted(
            connection.execute(select(Item.id, Item.state, Item.quantity, Item.version)).all()
        )
        return counted


def rows(session, entity: str, entity_id, action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).where(
        AuditEntry.entity == entity, AuditEntry.entity_id == str(entity_id)
    )
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query.order_by(AuditEntry.seq)))


def created(session, entity: str, entity_id) -> dict:
    (row,) = rows(session, entity, entity_id, "create")
    return json.loads(row.new_value) | {"_row": row}


def events(session, item, action: str | None = None) -> list[CustodyEvent]:
    query = select(CustodyEvent).where(CustodyEvent.item_id == item.id)
    if action:
        query = query.where(CustodyEvent.action == action)
    return list(session.scalars(query.order_by(CustodyEvent.id)))


# -- guards through perform_action ------------------------------------------------------------


def test_no_shipment_of_a_product_before_release(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        before = committed(app)
        with pytest.raises(InvalidTransition, match="Cannot ship material that is quarantine"):
            perform_action(
                session,
                actor=maker,
                code=bag.code,
                action=Action.SHIP,
                move=Move(custodian="courier"),
            )
        assert committed(app) == before
        session.rollback()
        perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        event = perform_action(
            session, actor=maker, code=bag.code, action=Action.SHIP, move=Move(custodian="DHL")
        )
        assert (event.from_state, event.to_state) == ("released", "in_transit")
        assert (event.from_custodian, event.to_custodian) == ("Mads Maker", "DHL")


def test_release_refused_until_qc_is_complete(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        lot = quarantined_lot(app, session, people, new_episode(session, maker), qc=False)
        bag = lot.bags[0]
        required = app.config["LIMS"]["custody"]["required_qc"]
        for test in required[:-1]:
            production.add_qc_result(
                session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
            )
        with pytest.raises(InvalidTransition, match=f"QC is not complete: {required[-1]} missing"):
            perform_action(
                session,
                actor=qp,
                code=bag.code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )
        session.rollback()
        production.add_qc_result(
            session,
            actor=maker,
            lot_number=lot.lot_number,
            test=required[-1],
            value="ok",
            passed=True,
        )
        event = perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        signature = session.get(ESignature, event.signature_id)
        assert signature.meaning == "released" and signature.user_id == qp.id
        assert signature.printed_name == "Quinn Person"
        assert signature.record_hash and len(signature.record_hash) == 64
        manager_row, witness_row = rows(session, "item", bag.id, "sign")
        assert manager_row.user_id == qp.id and f"signature {signature.id}" in manager_row.new_value
        witness = session.get(ESignature, event.witness_signature_id)
        assert (witness.user_id, witness.meaning) == (people["maker"].id, "verified")
        assert witness_row.user_id == people["maker"].id


def test_release_needs_a_manager(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        before = committed(app)
        with pytest.raises(Forbidden):
            perform_action(
                session,
                actor=maker,
                code=bag.code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )
        assert committed(app) == before


@pytest.mark.parametrize("password", ["wrong-password-123", "", None])
def test_release_with_a_wrong_password_changes_nothing(app, people, password):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        before = committed(app)
        signatures = count(session, ESignature)
        with pytest.raises(ValidationError, match="password") as refusal:
            perform_action(
                session,
                actor=qp,
                code=bag.code,
                action=Action.RELEASE,
                password=password,
                witness=second_person(session, people["maker"]),
            )
        assert refusal.value.field == "password"
        # Nothing is pending that a careless caller could still commit ...
        assert not session.new and not session.dirty
        assert count(session, ESignature) == signatures
        # ... and nothing was committed.
        assert committed(app) == before
        session.rollback()
        assert session.get(Item, bag.id).state is State.QUARANTINE
        assert [e.action for e in events(session, bag)] == ["register", "quarantine"]


def test_thaw_refused_for_a_bag_received_away_from_the_treating_site(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, elsewhere = actor(session, people["tech"]), actor(session, people["elsewhere"])
        episode = new_episode(session, tech)
        bag = issued_bag(app, session, people, episode, receiver="elsewhere")
        assert bag.site.code == "OUH"
        before = committed(app)
        with pytest.raises(InvalidTransition, match="not been received at the patient's treating"):
            perform_action(session, actor=elsewhere, code=bag.code, action=Action.THAW)
        assert committed(app) == before
        session.rollback()
        # Carrying it to the treating site without a receipt there does not make it thawable.
        perform_action(
            session, actor=elsewhere, code=bag.code, action=Action.STORE, move=Move(site_code="RH")
        )
        moved = {r.field: r for r in rows(session, "item", bag.id, "store")}
        assert (moved["state"].old_value, moved["state"].new_value) == ("issued", "stored")
        assert moved["site_id"].new_value == str(session.get(Item, bag.id).site_id)
        perform_action(session, actor=tech, code=bag.code, action=Action.ISSUE)
        with pytest.raises(InvalidTransition, match="not been received"):
            perform_action(session, actor=tech, code=bag.code, action=Action.THAW)


def test_thaw_allowed_after_receipt_at_the_treating_site(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = issued_bag(app, session, people, new_episode(session, tech))
        event = perform_action(session, actor=tech, code=bag.code, action=Action.THAW)
        assert (event.from_state, event.to_state) == ("issued", "thawed")
        assert session.get(Item, bag.id).thawed_at is not None
        (row,) = [r for r in rows(session, "item", bag.id, "thaw") if r.field == "thawed_at"]
        assert row.old_value is None and row.new_value


def test_no_thaw_before_issue_or_receipt(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        walk(session, maker, bag.code, Action.SHIP, move=Move(custodian="courier"))
        with pytest.raises(InvalidTransition, match="Cannot thaw material that is in transit"):
            perform_action(session, actor=maker, code=bag.code, action=Action.THAW)


def test_no_infusion_without_a_passed_bedside_check(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = issued_bag(app, session, people, new_episode(session, tech))
        walk(session, tech, bag.code, Action.THAW)
        with pytest.raises(InvalidTransition, match="Cannot infuse material that is thawed"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )
        session.rollback()
        # Identity marked verified without a passed bedside check (only an internal step can
        # do that): the infusion guard still refuses, with no check and after a failed one.
        perform_action(
            session, actor=tech, code=bag.code, action=Action.VERIFY_IDENTITY, internal=True
        )
        before = committed(app)
        with pytest.raises(InvalidTransition, match="No passed bedside identity check"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )
        assert committed(app) == before
        session.rollback()
        session.add(BedsideCheck(item_id=bag.id, passed=False, mismatches="wristband"))
        session.commit()
        with pytest.raises(InvalidTransition, match="No passed bedside identity check"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )


def test_verify_identity_is_not_a_button(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = issued_bag(app, session, people, new_episode(session, tech))
        walk(session, tech, bag.code, Action.THAW)
        with pytest.raises(InvalidTransition, match="its own step"):
            perform_action(session, actor=tech, code=bag.code, action=Action.VERIFY_IDENTITY)


def test_infusion_time_limit_comes_from_the_products_configuration(app, people):
    app.config["LIMS"]["custody"]["max_minutes_after_thaw"] = 30
    app.config["LIMS"]["custody"]["max_minutes_after_thaw_by_product"] = {"Carvykti": 45}
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        long_limit = verified_bag(
            app, session, people, new_episode(session, tech, n=1, product="Carvykti")
        )
        default_limit = verified_bag(app, session, people, new_episode(session, tech, n=2))
        for bag in (long_limit, default_limit):
            bag.thawed_at = lims_db.utcnow() - timedelta(minutes=40)
        session.commit()
        with pytest.raises(InvalidTransition, match="More than 30 minutes"):
            perform_action(
                session,
                actor=manager,
                code=default_limit.code,
                action=Action.INFUSE,
                password=PASSWORD,
            )
        session.rollback()
        assert session.get(Item, default_limit.id).state is State.IDENTITY_VERIFIED
        event = perform_action(
            session, actor=manager, code=long_limit.code, action=Action.INFUSE, password=PASSWORD
        )
        assert event.to_state == "infused"
        assert session.get(ESignature, event.signature_id).meaning == "administered"
        episode = long_limit.episode
        assert episode.infused_at is not None
        (row,) = rows(session, "episode", episode.id, "infuse")
        assert row.field == "infused_at" and row.user_id == manager.id


def test_infusion_with_a_wrong_password_changes_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = verified_bag(app, session, people, new_episode(session, tech))
        before = committed(app)
        with pytest.raises(ValidationError, match="password"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password="not-it-at-all"
            )
        assert committed(app) == before
        session.rollback()
        assert session.get(Item, bag.id).episode.infused_at is None


# -- holds ------------------------------------------------------------------------------------


def test_out_of_spec_qc_puts_the_lots_bags_on_hold_and_blocks_release(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        other_lot = quarantined_lot(app, session, people, new_episode(session, maker, n=2))
        lot = quarantined_lot(app, session, people, new_episode(session, maker), bags=2)
        result = production.add_qc_result(
            session,
            actor=maker,
            lot_number=lot.lot_number.lower(),
            test="viability",
            value="61",
            unit="%",
            specification=">= 70 %",
            passed=False,
        )
        assert result.passed is False
        for bag in lot.bags:
            (hold,) = holds.open_holds(session, bag.id)
            assert hold.reason is HoldReason.QC_OUT_OF_SPECIFICATION
            assert hold.detail == "viability = 61 %" and hold.placed_by_id == maker.id
            hold_row = created(session, "hold", hold.id)
            assert hold_row["_row"].user_id == maker.id
            assert hold_row["_row"].reason == "viability = 61 %"
            assert hold_row["item_id"] == str(bag.id)
        assert holds.open_holds(session, other_lot.bags[0].id) == []
        with pytest.raises(InvalidTransition, match="QC out of specification: viability"):
            perform_action(
                session,
                actor=qp,
                code=lot.bags[0].code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )
        session.rollback()
        # Clearing the hold alone does not make a failed lot releasable.
        holds.clear_hold(
            session,
            actor=qp,
            hold_id=holds.open_holds(session, lot.bags[0].id)[0].id,
            reason="investigated",
        )
        with pytest.raises(InvalidTransition, match="QC out of specification"):
            perform_action(
                session,
                actor=qp,
                code=lot.bags[0].code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )
        session.rollback()
        perform_action(
            session,
            actor=qp,
            code=other_lot.bags[0].code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )


def test_hold_on_a_released_bag_blocks_shipment(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        bag = quarantined_lot(app, session, people, new_episode(session, maker)).bags[0]
        perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        holds.place_hold(
            session, actor=maker, item=bag, reason="temperature_excursion", detail="logger alarm"
        )
        with pytest.raises(InvalidTransition, match=r"on hold.*logger alarm"):
            perform_action(
                session, actor=maker, code=bag.code, action=Action.SHIP, move=Move(custodian="c")
            )


def test_hold_blocks_reserve_and_distribute_until_a_manager_clears_it(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        hold = holds.place_hold(
            session, actor=tech, item=sample, reason=HoldReason.OTHER, detail="  label smudged "
        )
        hold_row = created(session, "hold", hold.id)
        assert hold_row["_row"].user_id == tech.id and hold_row["_row"].reason == "label smudged"
        assert hold_row["reason"] == "other" and hold_row["detail"] == "label smudged"
        before = committed(app)
        with pytest.raises(InvalidTransition, match=r"on hold \(other: label smudged\)"):
            perform_action(
                session, actor=manager, code=sample.code, action=Action.RESERVE, internal=True
            )
        assert committed(app) == before
        session.rollback()
        with pytest.raises(Forbidden):
            holds.clear_hold(session, actor=tech, hold_id=hold.id, reason="fine")
        session.rollback()
        for reason in ("", "   "):
            with pytest.raises(ValidationError, match="reason"):
                holds.clear_hold(session, actor=manager, hold_id=hold.id, reason=reason)
            session.rollback()
        assert committed(app) == before
        holds.clear_hold(session, actor=manager, hold_id=hold.id, reason="relabelled, checked")
        cleared = session.get(Hold, hold.id)
        assert cleared.cleared_by_id == manager.id and cleared.clear_reason == "relabelled, checked"
        clear_rows = rows(session, "hold", hold.id, "clear_hold")
        assert {r.field for r in clear_rows} == {"cleared_at", "cleared_by_id", "clear_reason"}
        assert all(
            r.user_id == manager.id and r.reason == "relabelled, checked" for r in clear_rows
        )
        with pytest.raises(Conflict, match="cleared already"):
            holds.clear_hold(session, actor=manager, hold_id=hold.id, reason="again")
        session.rollback()

        perform_action(
            session, actor=manager, code=sample.code, action=Action.RESERVE, internal=True
        )
        perform_action(session, actor=tech, code=sample.code, action=Action.PICK, internal=True)
        second = holds.place_hold(
            session, actor=tech, item=sample, reason="consent_withdrawn", detail="letter"
        )
        with pytest.raises(InvalidTransition, match="on hold"):
            perform_action(
                session, actor=tech, code=sample.code, action=Action.DISTRIBUTE, internal=True
            )
        session.rollback()
        with pytest.raises(InvalidTransition, match="on hold"):
            perform_action(
                session,
                actor=tech,
                code=sample.code,
                action=Action.HAND_OVER,
                move=Move(custodian="courier"),
                internal=True,
            )
        session.rollback()
        assert session.get(Item, sample.id).state is State.PICKED
        holds.clear_hold(session, actor=manager, hold_id=second.id, reason="consent confirmed")
        event = perform_action(
            session, actor=tech, code=sample.code, action=Action.DISTRIBUTE, internal=True
        )
        assert (event.from_state, event.to_state) == ("picked", "distributed")


def test_aliquots_of_material_on_hold_are_on_hold(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        holds.place_hold(
            session, actor=tech, item=sample, reason="temperature_excursion", detail="-60 °C"
        )
        (child,) = production.aliquot(
            session,
            actor=tech,
            parent_code=sample.code,
            count=1,
            quantity_each=1,
            unit="mL",
            material_type="plasma",
        )
        (inherited,) = holds.open_holds(session, child.id)
        assert inherited.reason is HoldReason.TEMPERATURE_EXCURSION
        assert created(session, "hold", inherited.id)["_row"].user_id == tech.id
        walk(session, tech, child.code, Action.STORE)
        with pytest.raises(InvalidTransition, match="on hold"):
            perform_action(
                session, actor=manager, code=child.code, action=Action.RESERVE, internal=True
            )


def test_place_hold_needs_a_detail_and_open_material(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        researcher = actor(session, people["researcher"])
        with pytest.raises(Forbidden):
            holds.place_hold(session, actor=researcher, item=sample, reason="other", detail="x")
        with pytest.raises(ValidationError):
            holds.place_hold(session, actor=tech, item=sample, reason="other", detail=" ")
        with pytest.raises(ValidationError):
            holds.place_hold(session, actor=tech, item=sample, reason="bored", detail="x")
        perform_action(session, actor=tech, code=sample.code, action=Action.LOSE, reason="gone")
        with pytest.raises(Conflict, match="nothing to hold"):
            holds.place_hold(session, actor=tech, item=sample, reason="other", detail="x")
        assert count(session, Hold) == 0


# -- what every writing service leaves behind -------------------------------------------------


def test_register_collection_writes_its_event_and_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session,
            actor=tech,
            coi=episode.coi + episode.coi_check,
            volume_ml="250.5",
            tnc_count=12_000_000_000,
            collected_at=lims_db.utcnow(),
        )
        assert collection.kind is Kind.APHERESIS and collection.state is State.COLLECTED
        assert identifiers.parse_din(collection.code + collection.check_character, scanned=False)
        assert collection.code.startswith("W1234")
        values = created(session, "item", collection.id)
        assert values["_row"].user_id == tech.id and values["_row"].actor == tech.username
        assert values["code"] == collection.code and values["state"] == "collected"
        assert values["episode_id"] == str(episode.id) and values["cell_count"] == "12000000000"
        (event,) = events(session, collection)
        assert (event.action, event.from_state, event.to_state) == ("register", None, "collected")
        assert event.user_id == tech.id and event.to_site_id == collection.site_id
        assert event.to_custodian == "Tina Tech"


def test_create_lot_consumes_the_collection_and_registers_the_bags(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        episode = new_episode(session, maker)
        collection = collection_in_manufacturing(session, people, episode)
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number=" lot-77 ",
            apheresis_codes=[collection.code],
            bags=[production.BagSpec(volume_ml=50, cell_count=6), production.BagSpec(40)],
        )
        assert lot.lot_number == "LOT-77" and lot.episode_id == episode.id
        lot_row = created(session, "product_lot", lot.id)
        assert lot_row["_row"].user_id == maker.id and lot_row["lot_number"] == "LOT-77"
        consumed = session.get(Item, collection.id)
        assert consumed.state is State.CONSUMED
        (consume,) = events(session, consumed, "consume")
        assert (consume.from_state, consume.to_state) == ("in_manufacturing", "consumed")
        assert consume.reason == "manufactured into lot LOT-77" and consume.user_id == maker.id
        (state_row,) = [r for r in rows(session, "item", collection.id, "consume")]
        assert (state_row.field, state_row.old_value, state_row.new_value) == (
            "state",
            "in_manufacturing",
            "consumed",
        )
        assert len(lot.bags) == 2 and len({b.code for b in lot.bags}) == 2
        for bag in lot.bags:
            assert bag.kind is Kind.PRODUCT_BAG and bag.episode_id == episode.id
            assert bag.code.startswith("W5678")  # a DIN of the manufacturing site
            assert identifiers.din_check_character(bag.code) == bag.check_character
            values = created(session, "item", bag.id)
            assert values["lot_id"] == str(lot.id) and values["_row"].reason == "lot LOT-77"
            (event,) = events(session, bag)
            assert (event.action, event.to_state, event.user_id) == (
                "register",
                "manufactured",
                maker.id,
            )
        with pytest.raises(Conflict, match="exists already"):
            production.create_lot(
                session,
                actor=maker,
                lot_number="LOT-77",
                apheresis_codes=[collection.code],
                bags=[production.BagSpec(1)],
            )


def test_create_lot_refuses_collections_of_two_episodes(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        first = collection_in_manufacturing(session, people, new_episode(session, maker, n=1))
        second = collection_in_manufacturing(session, people, new_episode(session, maker, n=2))
        before = committed(app)
        with pytest.raises(Conflict, match="Chain of Identity"):
            production.create_lot(
                session,
                actor=maker,
                lot_number="MIXED-1",
                apheresis_codes=[first.code, second.code],
                bags=[production.BagSpec(volume_ml=50)],
            )
        assert committed(app) == before
        session.rollback()
        assert count(session, ProductLot) == 0
        assert session.get(Item, first.id).state is State.IN_MANUFACTURING
        assert session.get(Item, second.id).state is State.IN_MANUFACTURING


def test_create_lot_refuses_a_collection_not_in_manufacturing(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        episode = new_episode(session, maker)
        collection = production.register_collection(
            session, actor=maker, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        before = committed(app)
        with pytest.raises(InvalidTransition, match="Cannot consume material that is collected"):
            production.create_lot(
                session,
                actor=maker,
                lot_number="EARLY-1",
                apheresis_codes=[collection.code],
                bags=[production.BagSpec(volume_ml=50)],
            )
        assert committed(app) == before


def test_add_qc_result_is_audited(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        lot = quarantined_lot(app, session, people, new_episode(session, maker), qc=False)
        result = production.add_qc_result(
            session,
            actor=maker,
            lot_number=lot.lot_number,
            test=" Sterility ",
            value="no growth",
            specification="no growth",
            passed=True,
        )
        values = created(session, "qc_result", result.id)
        assert values["_row"].user_id == maker.id
        assert (values["test"], values["value"], values["passed"]) == (
            "sterility",
            "no growth",
            "true",
        )
        assert values["lot_id"] == str(lot.id)
        assert holds.open_holds(session, lot.bags[0].id) == []
        with pytest.raises(ValidationError, match="QC test is one of"):
            production.add_qc_result(
                session,
                actor=maker,
                lot_number=lot.lot_number,
                test="vibes",
                value="1",
                passed=True,
            )
        with pytest.raises(Forbidden):
            production.add_qc_result(
                session,
                actor=actor(session, people["researcher"]),
                lot_number=lot.lot_number,
                test="sterility",
                value="1",
                passed=True,
            )
        assert count(session, QcResult) == 1


def test_register_sample_writes_its_event_and_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        sample = production.register_sample(
            session,
            actor=tech,
            coi=f"&/{episode.coi}",
            material_type="whole_blood",
            quantity=9,
            unit="mL",
            collected_at=lims_db.utcnow(),
            timepoint=" D14 ",
            timepoint_day=14,
        )
        assert identifiers.parse_local_id(sample.code, width=7).prefix == "RH"
        assert sample.check_character == sample.code[-1]
        values = created(session, "item", sample.id)
        assert values["_row"].user_id == tech.id
        assert (values["state"], values["kind"], values["timepoint"]) == (
            "registered",
            "aliquot",
            "D14",
        )
        (event,) = events(session, sample)
        assert (event.action, event.from_state, event.to_state, event.user_id) == (
            "register",
            None,
            "registered",
            tech.id,
        )
        with pytest.raises(ValidationError, match="cannot be registered as aliquot"):
            production.register_sample(
                session,
                actor=tech,
                coi=episode.coi,
                material_type="car_t_product",
                quantity=1,
                unit="mL",
                collected_at=lims_db.utcnow(),
            )


def test_perform_action_writes_event_and_audit_rows(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = production.register_sample(
            session,
            actor=tech,
            coi=new_episode(session, tech).coi,
            material_type="plasma",
            quantity=2,
            unit="mL",
            collected_at=lims_db.utcnow(),
        )
        event = perform_action(
            session,
            actor=tech,
            code=sample.code.lower(),
            action="store",
            reason=" first freeze ",
            move=Move(location=" Freezer A / shelf 2 ", temperature_logger_ref="TL-1"),
        )
        assert event.user_id == tech.id and event.action == "store"
        assert (event.from_state, event.to_state) == ("registered", "stored")
        assert (event.from_location, event.to_location) == ("", "Freezer A / shelf 2")
        assert event.reason == "first freeze" and event.temperature_logger_ref == "TL-1"
        changed = {r.field: r for r in rows(session, "item", sample.id, "store")}
        assert set(changed) == {"state", "location"}
        assert (changed["state"].old_value, changed["state"].new_value) == ("registered", "stored")
        assert changed["location"].new_value == "Freezer A / shelf 2"
        assert all(r.user_id == tech.id and r.reason == "first freeze" for r in changed.values())
        walk(session, tech, sample.code, Action.CHECK_OUT, Action.RETURN_TO_STORAGE)
        assert session.get(Item, sample.id).thaw_count == 1
        (thaw_row,) = [
            r
            for r in rows(session, "item", sample.id, "return_to_storage")
            if r.field == "thaw_count"
        ]
        assert (thaw_row.old_value, thaw_row.new_value) == ("0", "1")
        assert audit.verify_chain(session).intact


def test_discard_needs_a_reason(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        before = committed(app)
        for reason in (None, "", "   "):
            with pytest.raises(ValidationError, match="reason") as refusal:
                perform_action(
                    session, actor=tech, code=sample.code, action=Action.DISCARD, reason=reason
                )
            assert refusal.value.field == "reason"
            session.rollback()
        assert committed(app) == before
        event = perform_action(
            session, actor=tech, code=sample.code, action=Action.DISCARD, reason="haemolysed"
        )
        assert event.reason == "haemolysed" and event.to_state == "discarded"
        assert rows(session, "item", sample.id, "discard")[0].reason == "haemolysed"
        with pytest.raises(InvalidTransition):
            perform_action(session, actor=tech, code=sample.code, action="store")


def test_shipping_needs_a_custodian(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        collection = production.register_collection(
            session,
            actor=tech,
            coi=new_episode(session, tech).coi,
            volume_ml=100,
            collected_at=lims_db.utcnow(),
        )
        with pytest.raises(ValidationError, match="courier"):
            perform_action(session, actor=tech, code=collection.code, action=Action.SHIP)


def test_researchers_cannot_see_bags_nor_move_aliquots(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, researcher = actor(session, people["tech"]), actor(session, people["researcher"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        sample = stored_sample(session, tech, episode)
        with pytest.raises(NotFound):
            perform_action(session, actor=researcher, code=collection.code, action=Action.PACK)
        with pytest.raises(Forbidden):
            perform_action(session, actor=researcher, code=sample.code, action=Action.CHECK_OUT)


def test_bedside_check_both_outcomes_are_recorded(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        bag = issued_bag(app, session, people, episode)
        with pytest.raises(InvalidTransition, match="after thaw"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=bag.code,
                coi_scan=f"&/{episode.coi}",
                wristband_scan=cpr(1),
            )
        session.rollback()
        walk(session, tech, bag.code, Action.THAW)
        with pytest.raises(Conflict, match=r"IDENTITY MISMATCH.*wristband"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=f"={bag.code}00",
                coi_scan=episode.coi + episode.coi_check,
                wristband_scan=cpr(2),  # another person's CPR
            )
        session.rollback()
        failed = session.scalar(select(BedsideCheck).where(BedsideCheck.passed.is_(False)))
        assert failed.item_id == bag.id and failed.checked_by_id == tech.id
        assert "wristband" in failed.mismatches and cpr(2) not in failed.mismatches
        failed_row = created(session, "bedside_check", failed.id)
        assert failed_row["passed"] == "false" and failed_row["_row"].user_id == tech.id
        assert cpr(2) not in failed_row["_row"].new_value
        assert session.get(Item, bag.id).state is State.THAWED
        assert events(session, bag, "verify_identity") == []

        outcome = bedside.bedside_check(
            session,
            actor=tech,
            bag_scan=bag.code.lower(),
            coi_scan=f"&/{episode.coi}",
            wristband_scan=cpr(1)[:6] + "-" + cpr(1)[6:],
            witness_username=people["tech2"].username,
            witness_password=PASSWORD,
        )
        assert outcome.passed and outcome.check.passed
        passed_row = created(session, "bedside_check", outcome.check.id)
        assert passed_row["passed"] == "true" and passed_row["_row"].user_id == tech.id
        (event,) = events(session, bag, "verify_identity")
        assert (event.from_state, event.to_state, event.user_id) == (
            "thawed",
            "identity_verified",
            tech.id,
        )
        (state_row,) = rows(session, "item", bag.id, "verify_identity")
        assert (state_row.old_value, state_row.new_value) == ("thawed", "identity_verified")


def test_bedside_check_refuses_a_wrong_cassette(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=1)
        other = new_episode(session, tech, n=2)
        bag = issued_bag(app, session, people, episode)
        walk(session, tech, bag.code, Action.THAW)
        with pytest.raises(Conflict, match="cassette's Chain of Identity is not this bag's"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=bag.code,
                coi_scan=f"&/{other.coi}",
                wristband_scan=cpr(1),
            )
        session.rollback()
        with pytest.raises(Conflict, match="not a valid Chain of Identity"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=bag.code,
                coi_scan=episode.coi + "?",
                wristband_scan=cpr(1),
            )
        session.rollback()
        assert count(session, BedsideCheck, BedsideCheck.passed.is_(False)) == 2
        assert session.get(Item, bag.id).state is State.THAWED


# -- aliquoting and lineage -------------------------------------------------------------------


def test_aliquot_makes_n_of_n_children_and_takes_their_volume(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        parent = stored_sample(session, tech, new_episode(session, tech), quantity=10)
        children = production.aliquot(
            session,
            actor=tech,
            parent_code=parent.code,
            count=4,
            quantity_each="1.5",
            unit="mL",
            material_type="plasma",
        )
        assert [(c.aliquot_number, c.aliquot_total) for c in children] == [
            (1, 4),
            (2, 4),
            (3, 4),
            (4, 4),
        ]
        codes = [c.code for c in children]
        assert len(set(codes) | {parent.code}) == 5
        for child in children:
            parsed = identifiers.parse_local_id(child.code, width=7)
            assert parsed.prefix == "RH" and parsed.text == child.code
            assert child.check_character == parsed.check
            assert child.parent_id == parent.id and child.episode_id == parent.episode_id
            assert child.state is State.REGISTERED and child.quantity == 1.5
            assert child.timepoint == "D7" and child.timepoint_day == 7
        session.expire_all()
        assert session.get(Item, parent.id).quantity == 4
        (qty,) = rows(session, "item", parent.id, "aliquot")
        assert (qty.field, qty.user_id) == ("quantity", tech.id)
        assert float(qty.old_value) == 10 and float(qty.new_value) == 4
        (event,) = events(session, parent, "aliquot")
        assert event.from_state == event.to_state == "stored" and "4 × 1.5 mL" in event.reason
        for child in children:
            row = created(session, "item", child.id)
            assert row["parent_id"] == str(parent.id)
            assert row["_row"].reason == f"aliquot {child.aliquot_number}/4 of {parent.code}"
            assert [e.action for e in events(session, child)] == ["register"]


@pytest.mark.parametrize(
    ("count_", "each", "unit", "error", "field"),
    [
        (3, "4", "mL", ValidationError, "quantity_each"),  # 12 mL from 10 mL
        (11, "1", "mL", ValidationError, "quantity_each"),
        (2, "100", "µL", ValidationError, "unit"),
        (0, "1", "mL", ValidationError, "count"),
        (2, "-1", "mL", ValidationError, "quantity"),
    ],
)
def test_aliquot_refusals_write_nothing(app, people, count_, each, unit, error, field):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        parent = stored_sample(session, tech, new_episode(session, tech), quantity=10)
        before = committed(app)
        with pytest.raises(error) as refusal:
            production.aliquot(
                session,
                actor=tech,
                parent_code=parent.code,
                count=count_,
                quantity_each=each,
                unit=unit,
                material_type="plasma",
            )
        assert refusal.value.field == field
        assert committed(app) == before
        session.rollback()
        assert session.get(Item, parent.id).quantity == 10


def test_aliquot_exactly_the_whole_volume(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        parent = stored_sample(session, tech, new_episode(session, tech), quantity=10)
        production.aliquot(
            session,
            actor=tech,
            parent_code=parent.code,
            count=4,
            quantity_each="2.5",
            unit="mL",
            material_type="serum",
        )
        session.expire_all()
        assert session.get(Item, parent.id).quantity == 0


def test_no_aliquots_from_material_that_is_gone_or_travelling(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        perform_action(session, actor=tech, code=sample.code, action="discard", reason="spilt")
        with pytest.raises(Conflict, match="cannot be aliquoted"):
            production.aliquot(
                session,
                actor=tech,
                parent_code=sample.code,
                count=1,
                quantity_each=1,
                unit="mL",
                material_type="plasma",
            )


def test_lineage_of_an_aliquot_of_an_aliquot_leads_back_to_the_episode(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        (child,) = production.aliquot(
            session,
            actor=tech,
            parent_code=collection.code,
            count=1,
            quantity_each=20,
            unit="mL",
            material_type="pbmc",
        )
        grandchildren = production.aliquot(
            session,
            actor=tech,
            parent_code=child.code,
            count=2,
            quantity_each=5,
            unit="mL",
            material_type="pbmc",
        )
        session.expire_all()
        leaf = find_item(session, grandchildren[1].code)
        chain = lineage(leaf)
        assert [i.id for i in chain] == [grandchildren[1].id, child.id, collection.id]
        assert [i.kind for i in chain] == [Kind.ALIQUOT, Kind.ALIQUOT, Kind.APHERESIS]
        assert chain[-1].parent is None
        assert {i.episode.coi for i in chain} == {episode.coi}
        assert leaf.episode.patient.pseudonym == episode.patient.pseudonym
        assert (leaf.aliquot_number, leaf.aliquot_total) == (2, 2)
        assert session.get(Item, child.id).quantity == 10
        assert session.get(Item, collection.id).quantity == 180


# -- finding an item by what was scanned or typed ---------------------------------------------


def test_find_item_by_scanned_and_typed_din(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        din, k = collection.code, collection.check_character
        assert k == identifiers.din_check_character(din)
        eye_readable = f"{din[:5]} {din[5:7]} {din[7:]} {k}".lower()
        for text in (f"={din}00", f" ={din}05\n", din + k, eye_readable):
            assert find_item(session, text).id == collection.id, text
        wrong_k = identifiers.MOD37_2_CHARSET[(identifiers.MOD37_2_CHARSET.index(k) + 1) % 37]
        with pytest.raises(ValidationError, match="check character should be"):
            find_item(session, din + wrong_k)
        with pytest.raises(ValidationError, match="is an ISBT 128 product code, not") as refusal:
            find_item(session, "=<S1234V00")
        assert refusal.value.field == "code"
        with pytest.raises(ValidationError, match="is a Chain of Identity identifier, not a bag"):
            find_item(session, f"&/{episode.coi}")
        with pytest.raises(ValidationError):
            find_item(session, "   ")
        with pytest.raises(NotFound):
            find_item(session, "=W123499999999" + "00")


def test_find_item_by_local_id(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        assert find_item(session, sample.code.lower()).id == sample.id
        assert find_item(session, f" {sample.code[:2]}-{sample.code[2:]} ").id == sample.id


def test_a_typed_din_without_its_check_character_is_refused(app, people):
    """DOMAIN.md §3: by hand, a DIN needs its K; exact codes (API, scans) do not."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        with pytest.raises(ValidationError, match="check character"):
            find_item(session, collection.code, manual=True)
        typed = collection.code + collection.check_character
        assert find_item(session, typed, manual=True).id == collection.id
        assert find_item(session, collection.code).id == collection.id


def test_one_step_on_many_items_is_checked_first_and_written_whole(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        episode = new_episode(session, tech)
        samples = [stored_sample(session, tech, episode) for _ in range(3)]
        holds.place_hold(
            session, actor=tech, item=samples[2], reason="other", detail="cap loose"
        )
        before = committed(app)
        with pytest.raises(InvalidTransition, match=rf"{samples[2].code}: .*on hold"):
            perform_many(
                session, actor=manager, items=samples, action=Action.RESERVE, internal=True
            )
        session.rollback()
        assert committed(app) == before
        with pytest.raises(InvalidTransition, match="its own step"):
            perform_many(session, actor=manager, items=samples[:2], action=Action.RESERVE)
        session.rollback()
        made = perform_many(
            session,
            actor=manager,
            items=samples[:2],
            action=Action.RESERVE,
            reason="request REQ-1",
            internal=True,
        )
        session.commit()
        assert [(e.action, e.from_state, e.to_state, e.reason) for e in made] == [
            ("reserve", "stored", "reserved", "request REQ-1")
        ] * 2
        for sample in samples[:2]:
            (row,) = rows(session, "item", sample.id, "reserve")
            assert (row.field, row.old_value, row.new_value) == ("state", "stored", "reserved")
        assert session.get(Item, samples[2].id).state is State.STORED
        assert audit.verify_chain(session).intact
