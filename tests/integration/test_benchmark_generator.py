"""The benchmark data set generator (benchmarks/) at a tiny scale: what it writes in bulk keeps
the invariants the application relies on, and the application goes on working on it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from sqlalchemy import func, select

from benchmarks.dataset import PASSWORD, load
from benchmarks.plan import Spec, make_plan
from lims import db, identifiers
from lims.audit.models import AuditEntry, ESignature
from lims.audit.services import record_hash, verify_chain
from lims.auth.models import User
from lims.custody import production
from lims.custody.domain import INITIAL_STATE, TRANSITIONS, Action, Kind, State
from lims.custody.models import BedsideCheck, CustodyEvent, IdentifierCounter, Item, ProductLot
from lims.patients.models import Episode
from lims.storage import services as storage
from lims.storage.domain import suitable
from lims.storage.models import Box
from tests.conftest import log_in

# Several batches (100 items each), so the chain and the counters cross commits.
SPEC = Spec(aliquots=300, boxes=8, patients=10, sites=2, registered=10, batch=100)
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def loaded(app) -> dict[str, int]:
    with app.app_context():
        return load(db.session(), SPEC, report=lambda line: None)


def test_every_stored_aliquot_has_one_place_and_its_custody_record(app):
    counts = loaded(app)
    with app.app_context():
        session = db.session()
        stored = session.scalars(select(Item).where(Item.state == State.STORED)).all()
        assert len(stored) == SPEC.aliquots
        places = Counter((item.box_id, item.position) for item in stored)
        assert all(box_id and position for box_id, position in places)
        assert max(places.values()) == 1
        boxes = {box.id: box for box in session.scalars(select(Box))}
        for item in stored:
            box = boxes[item.box_id]
            assert 1 <= item.position <= box.size
            assert item.location == storage.location_of(box, item.position)
            assert item.stored_at is not None and item.kind.value == "aliquot"
            assert suitable(item.material_type.value, box.unit.temperature_class) is None
        unplaced = session.scalars(select(Item).where(Item.state != State.STORED)).all()
        assert unplaced and all(item.box_id is None for item in unplaced)
        # A register and a store event per stored aliquot, nothing else.
        events = Counter(
            session.execute(
                select(CustodyEvent.action)
                .join(Item, CustodyEvent.item_id == Item.id)
                .where(Item.state == State.STORED)
            ).scalars()
        )
        assert events == {"register": SPEC.aliquots, "store": SPEC.aliquots}
        items = session.scalar(select(func.count()).select_from(Item))
        assert counts["item"] == items
        created = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.entity == "item", AuditEntry.action == "create")
        )
        assert created == items


def test_the_audit_chain_verifies_and_the_counters_go_on(app):
    loaded(app)
    with app.app_context():
        session = db.session()
        report = verify_chain(session)
        assert report.intact, report.problem
        assert report.rows == session.scalar(select(func.count()).select_from(AuditEntry))
        codes = set(session.scalars(select(Item.code)))
        counter = session.scalar(
            select(IdentifierCounter.last_value).where(IdentifierCounter.scope == "local:RH")
        )
        rh_codes = [code for code in codes if code.startswith("RH")]
        assert counter == len(rh_codes)
        # The application registers new aliquots of a generated sample: new codes, no clash.
        tech = session.scalar(select(User).where(User.username == "tech.rh"))
        parent = session.scalar(
            select(Item)
            .where(Item.code.like("RH%"), Item.material_type == "whole_blood")
            .order_by(Item.id)
            .limit(1)
        )
        children = production.aliquot(
            session,
            actor=tech,
            parent_code=parent.code,
            count=2,
            quantity_each="0.1",
            unit="mL",
            material_type="plasma",
        )
        assert {child.code for child in children}.isdisjoint(codes)
        assert children[0].code.startswith(f"RH{counter + 1:07d}")
        # ... and places one of the registered tubes in a free position, on the same chain.
        tube = session.scalar(
            select(Item.code).where(
                Item.code.like("RH%"),
                Item.state == State.REGISTERED,
                Item.material_type == "plasma",
                Item.parent_id.is_(None),
            )
        )
        box = session.scalar(select(Box).where(Box.code.like("RH-PL-%")).order_by(Box.code))
        placement = storage.place_item(
            session, actor=tech, item_scan=tube, box_scan=box.code, manual=False
        )
        assert placement.position is not None
        assert verify_chain(session).intact


def test_the_box_map_of_a_generated_box_renders(app, client):
    loaded(app)
    with app.app_context():
        session = db.session()
        box = session.scalar(select(Box).where(Box.code.like("RH-PBMC-%")).order_by(Box.code))
        first = session.scalar(
            select(Item.code).where(Item.box_id == box.id).order_by(Item.position).limit(1)
        )
        code = box.code
    assert log_in(client, "tech.rh", PASSWORD).status_code == 302
    page = client.get(f"/storage/boxes/{code}")
    assert page.status_code == 200
    assert code in page.get_data(as_text=True)
    assert first[:-1] in page.get_data(as_text=True)


def test_the_plan_is_seeded_and_refuses_too_few_boxes():
    assert make_plan(SPEC, NOW).draws == make_plan(SPEC, NOW).draws
    assert make_plan(SPEC, NOW).draws != make_plan(Spec(seed=7, **_sizes()), NOW).draws
    with pytest.raises(ValueError, match="boxes"):
        make_plan(Spec(aliquots=1_000, boxes=3, patients=10, sites=2), NOW)


def _sizes() -> dict[str, int]:
    return {"aliquots": SPEC.aliquots, "boxes": SPEC.boxes, "patients": SPEC.patients,
            "sites": SPEC.sites}  # fmt: skip


def test_every_episode_has_its_collection_and_infused_bag_with_a_lawful_history(app, client):
    loaded(app)
    with app.app_context():
        session = db.session()
        episodes = session.scalars(select(Episode).order_by(Episode.id)).all()
        assert len(episodes) == len(make_plan(SPEC, NOW).episodes)
        for episode in episodes:
            items = session.scalars(
                select(Item).where(Item.episode_id == episode.id, Item.kind != Kind.ALIQUOT)
            ).all()
            assert sorted(item.kind for item in items) == [Kind.APHERESIS, Kind.PRODUCT_BAG]
            collection = next(item for item in items if item.kind is Kind.APHERESIS)
            bag = next(item for item in items if item.kind is Kind.PRODUCT_BAG)
            assert (collection.state, bag.state) == (State.CONSUMED, State.INFUSED)
            assert bag.lot.sources == [collection] and bag.lot.episode_id == episode.id
            assert bag.site_id == episode.treating_site_id
            # Both are DINs with their check character, as the scanner reads them.
            for item in items:
                assert identifiers.din_check_character(item.code) == item.check_character
            results = {result.test: result.passed for result in bag.lot.qc_results}
            assert results == dict.fromkeys(app.config["LIMS"]["custody"]["required_qc"], True)
            for item in items:
                events = session.scalars(
                    select(CustodyEvent)
                    .where(CustodyEvent.item_id == item.id)
                    .order_by(CustodyEvent.id)
                ).all()
                assert events[0].action == "register" and events[0].from_state is None
                assert events[0].to_state == INITIAL_STATE[item.kind]
                # Every later step is one the state machine allows from where the item was.
                for before, event in pairwise(events):
                    transition = TRANSITIONS[item.kind][Action(event.action)]
                    assert event.from_state == before.to_state
                    assert before.to_state in transition.from_states
                    assert event.to_state == (transition.to_state or before.to_state)
                    assert event.at >= before.at
                    assert (event.from_site_id, event.from_location) == (
                        before.to_site_id,
                        before.to_location,
                    )
                    if transition.signature:
                        signature = session.get(ESignature, event.signature_id)
                        assert signature.meaning == transition.signature
                        # Bound to the item as it was before the step, as the services sign.
                        assert signature.record_hash == record_hash(
                            {"code": item.code, "state": before.to_state, "lot_id": item.lot_id,
                             "version": events.index(before) + 1, "action": event.action}
                        )  # fmt: skip
                assert events[-1].to_state == item.state and item.version == len(events)
                assert (events[-1].to_site_id, events[-1].to_location) == (
                    item.site_id,
                    item.location,
                )
            steps = [
                event.action
                for event in session.scalars(
                    select(CustodyEvent).where(CustodyEvent.item_id == bag.id)
                )
            ]
            assert steps[-3:] == ["thaw", "verify_identity", "infuse"]
            check = session.scalar(select(BedsideCheck).where(BedsideCheck.item_id == bag.id))
            witness = session.get(ESignature, check.witness_signature_id)
            assert check.passed and witness.user_id != check.checked_by_id
        assert verify_chain(session).intact
        # The application goes on: a new collection gets the next DIN of the site.
        tech = session.scalar(select(User).where(User.username == "tech.rh"))
        made = production.register_collection(
            session,
            actor=tech,
            coi=episodes[0].coi,
            volume_ml=200,
            collected_at=db.utcnow(),
        )
        used = set(session.scalars(select(Item.code).where(Item.id != made.id)))
        assert made.code not in used
        lot = session.scalar(select(ProductLot.lot_number).order_by(ProductLot.id))
    log_in(client, "manager.rh", PASSWORD)
    page = client.get(f"/manufacturing/lots/{lot}")
    assert page.status_code == 200 and b"infused" in page.data
