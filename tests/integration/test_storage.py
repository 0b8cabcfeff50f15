"""Storage against a real database: the hierarchy, placement by scan, moves, box moves."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit import services as audit
from lims.audit.models import AuditEntry
from lims.custody import production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import perform_action
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.history.services import item_history
from lims.storage import services as storage
from lims.storage.models import Box, StorageUnit
from tests.integration.people import actor, new_episode
from tests.integration.test_concurrency import at_once, postgresql_only  # noqa: F401


def freezer(session, manager, code="RH-F80-1", temperature="minus_80") -> None:
    storage.create_unit(
        session,
        actor=manager,
        code=code,
        name=f"Freezer {code}",
        unit_type="freezer",
        temperature_class=temperature,
    )
    storage.create_rack(session, actor=manager, unit_code=code, code=f"{code}-R1")


def box(session, who, code="BOX-1", unit="RH-F80-1", box_type="9x9", **options) -> Box:
    return storage.create_box(
        session,
        actor=who,
        code=code,
        unit_code=unit,
        rack_code=f"{unit}-R1",
        box_type=box_type,
        **options,
    )


PATIENTS = itertools.count(1)


def tubes(session, tech, n: int, material="plasma") -> list[Item]:
    episode = new_episode(session, tech, n=next(PATIENTS))
    draw = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=n,
        unit="mL",
        collected_at=lims_db.utcnow(),
    )
    return production.aliquot(
        session,
        actor=tech,
        parent_code=draw.code,
        count=n,
        quantity_each=1,
        unit="mL",
        material_type=material,
    )


def events(session, item, action=None) -> list[CustodyEvent]:
    query = select(CustodyEvent).where(CustodyEvent.item_id == item.id)
    if action:
        query = query.where(CustodyEvent.action == action)
    return list(session.scalars(query.order_by(CustodyEvent.id)))


def test_the_hierarchy_is_set_up_at_the_bench_with_unique_codes(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        researcher = actor(session, people["researcher"])
        with pytest.raises(Forbidden):
            storage.create_unit(
                session,
                actor=researcher,
                code="X",
                name="x",
                unit_type="freezer",
                temperature_class="minus_80",
            )
        storage.create_unit(
            session,
            actor=actor(session, people["elsewhere"]),
            code="OUH-F",
            name="Odense freezer",
            unit_type="freezer",
            temperature_class="minus_80",
        )
        with pytest.raises(Forbidden, match="OUH-F is at OUH"):
            storage.create_rack(session, actor=tech, unit_code="OUH-F", code="R")
        freezer(session, manager)
        with pytest.raises(Conflict, match="exists already"):
            freezer(session, manager)
        session.rollback()
        made = box(session, tech)
        assert made.path == "RH-F80-1 / RH-F80-1-R1 / BOX-1" and made.size == 81
        bin_ = box(session, tech, code="BIN-1", box_type=None, capacity=3)
        assert bin_.size == 3 and bin_.geometry is None
        with pytest.raises(ValidationError, match="one of the two"):
            box(session, tech, code="BAD", box_type="9x9", capacity=3)
        with pytest.raises(ValidationError, match="box type is one of"):
            box(session, tech, code="BAD", box_type="7x7")
        with pytest.raises(ValidationError, match="storage code"):
            box(session, tech, code="two words")
        (row,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "storage_box",
                AuditEntry.entity_id == str(made.id),
                AuditEntry.action == "create",
            )
        )
        assert row.user_id == tech.id and json.loads(row.new_value)["code"] == "BOX-1"


def test_placement_by_scan_fills_free_positions_and_refuses_what_does_not_fit(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
        box(session, tech)
        first, second, third = tubes(session, tech, 3)
        placed = storage.place_item(session, actor=tech, item_scan=first.code, box_scan="box-1")
        assert (placed.position_name, placed.action) == ("A1", Action.STORE)
        assert (
            storage.place_item(
                session, actor=tech, item_scan=second.code, box_scan="BOX-1", position="b03"
            ).position_name
            == "B3"
        )
        assert storage.next_free_position(session, placed.box) == 2
        with pytest.raises(Conflict, match=f"BOX-1 B3 holds {second.code} already"):
            storage.place_item(
                session, actor=tech, item_scan=third.code, box_scan="BOX-1", position="B3"
            )
        with pytest.raises(ValidationError, match="outside this box"):
            storage.place_item(
                session, actor=tech, item_scan=third.code, box_scan="BOX-1", position="K1"
            )
        box(session, tech, code="BOX-20", unit="RH-F20-1")
        with pytest.raises(Conflict, match="wrong temperature"):
            storage.place_item(session, actor=tech, item_scan=third.code, box_scan="BOX-20")
        with pytest.raises(NotFound, match="No box"):
            storage.place_item(session, actor=tech, item_scan=third.code, box_scan="NOPE")
        session.rollback()
        item = session.get(Item, first.id)
        assert (item.state, item.box_id, item.position) == (State.STORED, placed.box.id, 1)
        assert item.location == "RH-F80-1 / RH-F80-1-R1 / BOX-1 / A1"
        (store,) = events(session, item, "store")
        assert store.to_location == item.location and store.user_id == tech.id
        assert session.get(Item, third.id).state is State.REGISTERED


def test_another_sites_box_and_a_full_container_are_refused(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech, code="BIN-1", box_type=None, capacity=1)
        one, two = tubes(session, tech, 2)
        storage.place_item(session, actor=tech, item_scan=one.code, box_scan="BIN-1")
        with pytest.raises(Conflict, match="BIN-1 is full"):
            storage.place_item(session, actor=tech, item_scan=two.code, box_scan="BIN-1")
        session.rollback()
        with pytest.raises(Forbidden, match="you work at AUH"):
            storage.place_item(
                session, actor=actor(session, people["maker"]), item_scan=two.code,
                box_scan="BIN-1",
            )  # fmt: skip


def test_a_stored_tube_moves_to_a_new_position_with_a_move_event(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        box(session, tech, code="BOX-2")
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        moved = storage.place_item(
            session, actor=tech, item_scan=tube.code, box_scan="BOX-2", position="C4"
        )
        assert moved.action is Action.MOVE
        (event,) = events(session, tube, "move")
        assert (event.from_state, event.to_state) == ("stored", "stored")
        assert event.from_location.endswith("BOX-1 / A1") and event.to_location.endswith(
            "BOX-2 / C4"
        )
        assert storage.next_free_position(session, storage.box_by_code(session, "BOX-1")) == 1
        with pytest.raises(Conflict, match="already"):
            storage.place_item(
                session, actor=tech, item_scan=tube.code, box_scan="BOX-2", position="C4"
            )


def test_check_out_keeps_the_place_and_return_records_time_out_and_thaw(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        perform_action(session, actor=tech, code=tube.code, action=Action.CHECK_OUT)
        item = session.get(Item, tube.id)
        assert item.position == 1 and item.checked_out_at is not None
        (other,) = tubes(session, tech, 1)
        assert (
            storage.place_item(
                session, actor=tech, item_scan=other.code, box_scan="BOX-1"
            ).position_name
            == "A2"
        )  # A1 stays the checked-out tube's
        back = storage.place_item(
            session, actor=tech, item_scan=tube.code, box_scan="BOX-1", position="A1"
        )
        assert back.action is Action.RETURN_TO_STORAGE
        item = session.get(Item, tube.id)
        assert (item.state, item.thaw_count, item.checked_out_at) == (State.STORED, 1, None)
        (event,) = events(session, tube, "return_to_storage")
        assert event.reason.startswith("out of storage ") and event.reason.endswith(" min")
        # Storage bookkeeping is custody, not a recorded value changed after first entry.
        history = item_history(session, actor=tech, code=tube.code)
        assert history.changes == []


def test_leaving_storage_frees_the_position(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        perform_action(
            session, actor=tech, code=tube.code, action=Action.DISCARD, reason="tube cracked"
        )
        item = session.get(Item, tube.id)
        assert (item.box_id, item.position) == (None, None)
        assert storage.next_free_position(session, storage.box_by_code(session, "BOX-1")) == 1


def test_a_box_moves_with_its_content_one_event_per_item(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        freezer(session, manager, code="RH-F80-2")
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
        box(session, tech)
        placed = [
            storage.place_item(session, actor=tech, item_scan=t.code, box_scan="BOX-1")
            for t in tubes(session, tech, 3)
        ]
        with pytest.raises(Conflict, match="Nothing moved: RH-F20-1 is the wrong temperature"):
            storage.move_box(session, actor=tech, box_scan="BOX-1", unit_code="RH-F20-1")
        session.rollback()
        moved = storage.move_box(
            session,
            actor=tech,
            box_scan="BOX-1",
            unit_code="RH-F80-2",
            rack_code="RH-F80-2-R1",
            reason="freezer F80-1 defrost",
        )
        assert len(moved) == 3
        box_rows = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "storage_box", AuditEntry.action == "move"
            )
        ).all()
        units = {u.code: u.id for u in session.scalars(select(StorageUnit))}
        assert {(r.field, r.old_value, r.new_value) for r in box_rows} >= {
            ("unit_id", str(units["RH-F80-1"]), str(units["RH-F80-2"]))
        }
        assert all(r.reason == "freezer F80-1 defrost" and r.user_id == tech.id for r in box_rows)
        for placement in placed:
            item = session.get(Item, placement.item.id)
            assert item.position == placement.position
            assert item.location == f"RH-F80-2 / RH-F80-2-R1 / BOX-1 / {placement.position_name}"
            (event,) = events(session, item, "move")
            assert event.reason == "freezer F80-1 defrost"
        assert audit.verify_chain(session).intact


def test_a_box_moves_only_within_its_own_site(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        qp = actor(session, people["qp"])
        storage.create_unit(
            session,
            actor=qp,
            code="AUH-F80",
            name="AUH freezer",
            unit_type="freezer",
            temperature_class="minus_80",
        )
        with pytest.raises(Forbidden, match="RH-F80-1 is at RH; you work at AUH"):
            storage.move_box(
                session, actor=actor(session, people["maker"]), box_scan="BOX-1",
                unit_code="AUH-F80",
            )  # fmt: skip
        session.rollback()
        assert storage.box_by_code(session, "BOX-1").unit.code == "RH-F80-1"


def test_two_placements_into_one_position_at_once(app, people, postgresql_only):  # noqa: F811
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        pairs = [tuple(t.code for t in tubes(session, tech, 2)) for _ in range(3)]

    for number, (one, two) in enumerate(pairs, start=1):
        position = f"A{number}"

        def place(code, position=position):
            def job(job_session, who):
                return storage.place_item(
                    job_session, actor=who, item_scan=code, box_scan="BOX-1", position=position
                ).item.code

            return job

        outcomes = at_once(app, (people["tech"], place(one)), (people["tech2"], place(two)))
        winners = [o for o in outcomes if isinstance(o, str)]
        losers = [o for o in outcomes if not isinstance(o, str)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        assert isinstance(losers[0], Conflict) and position in losers[0].message
        with app.app_context():
            session = lims_db.session()
            holders = session.scalars(
                select(Item.code).where(Item.position == number, Item.box_id.is_not(None))
            ).all()
            assert holders == winners
