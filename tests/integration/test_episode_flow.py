"""A whole CAR-T episode through the services, from apheresis to infusion."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit import services as audit
from lims.audit.models import AuditEntry, ESignature
from lims.custody import bedside, production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import Move, lineage, perform_action
from lims.errors import Conflict, InvalidTransition, ValidationError
from lims.patients import services as patients
from tests.conftest import PASSWORD
from tests.integration.people import actor, second_person

CPR = "0707614285"  # born 1961-07-07; a made-up number that passes mod 11


def test_full_episode_from_collection_to_infusion(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        patient, warnings = patients.register_patient(
            session,
            actor=tech,
            identifier=CPR,
            name="Karen Hansen",
            treating_site_code="RH",
            consent_biobank=True,
        )
        assert warnings == []
        episode = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="Kymriah",
            product_kind="commercial",
            protocol="standard of care",
        )
        assert episode.coi.startswith("CHW1234")
        collection = production.register_collection(
            session,
            actor=tech,
            coi=episode.coi,
            volume_ml=250,
            tnc_count=12_000_000_000,
            collected_at=lims_db.utcnow() - timedelta(hours=3),
        )
        assert collection.state is State.COLLECTED
        for step, who, move in [
            (Action.PACK, tech, None),
            (Action.SHIP, tech, Move(custodian="World Courier", temperature_logger_ref="TL-9")),
            (Action.RECEIVE, maker, None),
            (Action.START_MANUFACTURING, maker, None),
        ]:
            perform_action(session, actor=who, code=collection.code, action=step, move=move)
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number="LOT-0001",
            apheresis_codes=[collection.code],
            bags=[production.BagSpec(volume_ml=50, cell_count=600_000_000)],
        )
        assert collection.state is State.CONSUMED
        bag = lot.bags[0]
        assert lineage(bag) == [bag, collection]
        retention = production.aliquot(
            session,
            actor=maker,
            parent_code=bag.code,
            count=1,
            quantity_each=1,
            unit="mL",
            material_type="product_retention",
        )[0]
        assert lineage(retention) == [retention, bag, collection]
        assert bag.episode_id == episode.id and bag.state is State.MANUFACTURED
        perform_action(session, actor=maker, code=bag.code, action=Action.QUARANTINE)
        with pytest.raises(InvalidTransition, match="QC is not complete"):
            perform_action(
                session,
                actor=qp,
                code=bag.code,
                action=Action.RELEASE,
                password=PASSWORD,
                witness=second_person(session, people["maker"]),
            )
        for test in app.config["LIMS"]["custody"]["required_qc"]:
            production.add_qc_result(
                session, actor=maker, lot_number="LOT-0001", test=test, value="ok", passed=True
            )
        with pytest.raises(ValidationError, match="password"):
            perform_action(
                session,
                actor=qp,
                code=bag.code,
                action=Action.RELEASE,
                password="wrong",
                witness=second_person(session, people["maker"]),
            )
        session.rollback()
        assert session.get(Item, bag.id).state is State.QUARANTINE
        perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        signature = session.scalar(select(ESignature).where(ESignature.meaning == "released"))
        assert signature.printed_name == qp.full_name
        perform_action(
            session,
            actor=maker,
            code=bag.code,
            action=Action.SHIP,
            move=Move(custodian="Cryoport", temperature_logger_ref="LN2-77"),
        )
        perform_action(
            session,
            actor=tech,
            code=bag.code,
            action=Action.RECEIVE,
            witness=second_person(session, people["tech2"]),
        )
        perform_action(
            session,
            actor=tech,
            code=bag.code,
            action=Action.STORE,
            move=Move(location="LN2 tank 2"),
        )
        perform_action(session, actor=tech, code=bag.code, action=Action.ISSUE)
        with pytest.raises(InvalidTransition, match="Cannot infuse"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )
        perform_action(session, actor=tech, code=bag.code, action=Action.THAW)
        with pytest.raises(Conflict, match="IDENTITY MISMATCH"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=bag.code,
                coi_scan=episode.coi + episode.coi_check,
                wristband_scan="2110620629",
            )
        outcome = bedside.bedside_check(
            session,
            actor=tech,
            bag_scan=bag.code,
            coi_scan=f"&/{episode.coi}",
            wristband_scan="070761-4285",
            witness_username=people["tech2"].username,
            witness_password=PASSWORD,
        )
        assert outcome.passed
        perform_action(
            session, actor=manager, code=bag.code, action=Action.INFUSE, password=PASSWORD
        )
        assert session.get(Item, bag.id).state is State.INFUSED
        assert patients.get_episode(session, episode.coi).infused_at is not None
        actions = session.scalars(
            select(CustodyEvent.action)
            .where(CustodyEvent.item_id == bag.id)
            .order_by(CustodyEvent.id)
        ).all()
        assert actions == [
            "register",
            "aliquot",  # the product retention sample
            "quarantine",
            "release",
            "ship",
            "receive",
            "store",
            "issue",
            "thaw",
            "verify_identity",
            "infuse",
        ]
        assert session.scalar(select(func.count()).select_from(AuditEntry)) > 20
        assert audit.verify_chain(session).intact


def thawed_bag(app, session, people, product="Yescarta") -> Item:
    """Walk one bag of a new episode to the thawed state through the services."""
    tech, maker, qp = (actor(session, people[k]) for k in ("tech", "maker", "qp"))
    patient, _ = patients.register_patient(
        session, actor=tech, identifier=CPR, name="K H", treating_site_code="RH"
    )
    episode = patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name=product,
        product_kind="commercial",
    )
    collection = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )
    perform_action(
        session,
        actor=tech,
        code=collection.code,
        action=Action.SHIP,
        move=Move(custodian="courier"),
    )
    perform_action(session, actor=maker, code=collection.code, action=Action.RECEIVE)
    perform_action(session, actor=maker, code=collection.code, action=Action.START_MANUFACTURING)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=f"L-{episode.id}",
        apheresis_codes=[collection.code],
        bags=[production.BagSpec(volume_ml=40)],
    )
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        production.add_qc_result(
            session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
        )
    bag = lot.bags[0]
    perform_action(session, actor=maker, code=bag.code, action=Action.QUARANTINE)
    perform_action(
        session,
        actor=qp,
        code=bag.code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    perform_action(
        session, actor=maker, code=bag.code, action=Action.SHIP, move=Move(custodian="courier")
    )
    perform_action(
        session,
        actor=tech,
        code=bag.code,
        action=Action.RECEIVE,
        witness=second_person(session, people["tech2"]),
    )
    for step in (Action.ISSUE, Action.THAW):
        perform_action(session, actor=tech, code=bag.code, action=step)
    return bag


def test_infusion_refused_after_the_products_time_limit(app, people):
    app.config["LIMS"]["custody"]["max_minutes_after_thaw_by_product"] = {"Yescarta": 20}
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = thawed_bag(app, session, people)
        bedside.bedside_check(
            session,
            actor=tech,
            bag_scan=bag.code,
            coi_scan=f"&/{bag.episode.coi}",
            wristband_scan=CPR,
            witness_username=people["tech2"].username,
            witness_password=PASSWORD,
        )
        # The clock moves on: thawed 21 minutes ago (the product allows 20).
        bag.thawed_at = lims_db.utcnow() - timedelta(minutes=21)
        session.commit()
        with pytest.raises(InvalidTransition, match="More than 20 minutes"):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )
        bag.thawed_at = lims_db.utcnow() - timedelta(minutes=19)
        session.commit()
        perform_action(session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD)
        assert bag.state is State.INFUSED


def test_failed_bedside_check_is_recorded_and_blocks_infusion(app, people):
    from lims.custody.models import BedsideCheck

    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = thawed_bag(app, session, people)
        with pytest.raises(Conflict, match="cassette's Chain of Identity is not this bag's"):
            bedside.bedside_check(
                session,
                actor=tech,
                bag_scan=bag.code,
                coi_scan="&/CHW123426999999",
                wristband_scan=CPR,
            )
        check = session.scalar(select(BedsideCheck))
        assert check.passed is False and "Chain of Identity" in check.mismatches
        assert CPR not in check.mismatches
        assert session.get(Item, bag.id).state is State.THAWED
        with pytest.raises(InvalidTransition):
            perform_action(
                session, actor=tech, code=bag.code, action=Action.INFUSE, password=PASSWORD
            )


def test_a_move_to_a_named_site_audits_the_state_change(app, people):
    """The site look-up must not flush the state change before its audit row is written."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient, _ = patients.register_patient(
            session, actor=tech, identifier=CPR, name="K H", treating_site_code="RH"
        )
        episode = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="X",
            product_kind="academic",
        )
        item = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
        )
        perform_action(
            session,
            actor=tech,
            code=item.code,
            action=Action.SHIP,
            move=Move(site_code="AUH", custodian="courier"),
        )
        fields = {
            row.field: (row.old_value, row.new_value)
            for row in session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity == "item",
                    AuditEntry.entity_id == str(item.id),
                    AuditEntry.action == "ship",
                )
            )
        }
        assert fields["state"] == ("collected", "in_transit")
        assert "site_id" in fields and "custodian" in fields
