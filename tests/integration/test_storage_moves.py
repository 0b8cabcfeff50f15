"""Moving racks, evacuating units, undoing a placement, editing the hierarchy, and the bench's
store step by box scan: against a real database, with their events and audit rows."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import perform_action
from lims.errors import Conflict, Forbidden, ValidationError
from lims.storage import editing, moves
from lims.storage import services as storage
from lims.storage.models import Box, Rack, StorageUnit
from tests.integration.people import actor
from tests.integration.test_storage import box, events, freezer, tubes


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_a_rack_moves_with_its_boxes_and_one_event_per_tube(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        freezer(session, manager, code="RH-F80-2")
        box(session, tech)
        box(session, tech, code="BOX-2")
        placed = tubes(session, tech, 3)
        for item, (box_code, position) in zip(
            placed, (("BOX-1", "A1"), ("BOX-1", "C3"), ("BOX-2", "I9")), strict=True
        ):
            storage.place_item(
                session, actor=tech, item_scan=item.code, box_scan=box_code, position=position
            )
        perform_action(session, actor=tech, code=placed[1].code, action=Action.CHECK_OUT)
        with pytest.raises(ValidationError, match="reason"):
            moves.move_rack(
                session, actor=tech, rack_code="RH-F80-1-R1", unit_code="RH-F80-2", reason=""
            )
        moved = moves.move_rack(
            session, actor=tech, rack_code="rh-f80-1-r1", unit_code="RH-F80-2", reason="rebuilt"
        )
        assert {item.code for item in moved} == {placed[0].code, placed[2].code}
        rack = session.scalar(select(Rack).where(Rack.code == "RH-F80-1-R1"))
        assert rack.unit.code == "RH-F80-2"
        assert {b.unit.code for b in session.scalars(select(Box))} == {"RH-F80-2"}
        first = session.get(Item, placed[0].id)
        assert (first.position, first.location) == (1, "RH-F80-2 / RH-F80-1-R1 / BOX-1 / A1")
        (move,) = events(session, first, "move")
        assert move.reason == "rack RH-F80-1-R1 moved: rebuilt"
        # The checked-out tube keeps its place in the moved box and gets no event now.
        out = session.get(Item, placed[1].id)
        assert (out.state, out.position) == (State.CHECKED_OUT, 21)
        assert events(session, out, "move") == []
        audited = session.scalars(
            select(AuditEntry.entity).where(AuditEntry.action == "move", AuditEntry.field
                                            == "unit_id")
        ).all()
        assert sorted(audited) == ["storage_box", "storage_box", "storage_rack"]


def test_an_evacuation_refuses_a_warmer_unit_unless_told_and_then_holds(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
        box(session, tech)
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        before = count(session, CustodyEvent)
        with pytest.raises(Conflict, match="wrong temperature"):
            moves.evacuate_unit(
                session, actor=tech, unit_code="RH-F80-1", to_unit_code="RH-F20-1", reason="alarm"
            )
        session.rollback()
        assert count(session, CustodyEvent) == before
        assert session.scalar(select(StorageUnit.active).where(StorageUnit.code == "RH-F80-1"))
        with pytest.raises(ValidationError, match="another unit"):
            moves.evacuate_unit(
                session, actor=tech, unit_code="RH-F80-1", to_unit_code="RH-F80-1", reason="x"
            )
        done = moves.evacuate_unit(
            session,
            actor=tech,
            unit_code="RH-F80-1",
            to_unit_code="RH-F20-1",
            reason="alarm",
            accept_warmer=True,
        )
        assert [item.code for item in done.moved] == [tube.code]
        assert [item.code for item in done.held] == [tube.code]
        assert done.source.active is False and (done.racks, done.boxes) == (1, 1)
        with pytest.raises(Conflict, match="RH-F80-1 is out of use"):
            box(session, tech, code="BOX-9")


def test_only_the_placer_undoes_and_only_the_last_step(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        tech2 = actor(session, people["tech2"])
        freezer(session, manager)
        box(session, tech)
        first, second = tubes(session, tech, 2)
        storage.place_item(session, actor=tech, item_scan=first.code, box_scan="BOX-1")
        (store,) = events(session, first, "store")
        with pytest.raises(Conflict, match="Only the person who placed"):
            moves.undo_placement(session, actor=tech2, item_scan=first.code, event_id=store.id)
        perform_action(session, actor=tech, code=first.code, action=Action.CHECK_OUT)
        with pytest.raises(Conflict, match="another step since"):
            moves.undo_placement(session, actor=tech, item_scan=first.code, event_id=store.id)
        storage.place_item(session, actor=tech, item_scan=second.code, box_scan="BOX-1")
        (store,) = events(session, second, "store")
        done = moves.undo_placement(session, actor=tech, item_scan=second.code, event_id=store.id)
        assert done.location == ""
        item = session.get(Item, second.id)
        assert (item.state, item.box_id, item.position, item.stored_at) == (
            State.REGISTERED, None, None, None
        )
        (undo,) = events(session, item, "undo_store")
        assert undo.reason == "placement undone at the bench" and undo.user_id == tech.id


def test_editing_the_hierarchy_is_audited_and_strands_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        box(session, tech)
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        edit = dict(code="RH-F80-1", name="Freezer 1", unit_type="freezer", active=True)
        with pytest.raises(Forbidden):
            editing.update_unit(
                session, actor=tech, temperature_class="minus_80", reason="x", **edit
            )
        with pytest.raises(Conflict, match=f"holds {tube.code}"):
            editing.update_unit(
                session, actor=manager, temperature_class="minus_20", reason="x", **edit
            )
        session.rollback()
        with pytest.raises(ValidationError, match="reason"):
            editing.update_unit(
                session, actor=manager, temperature_class="minus_80", reason="", **edit
            )
        session.rollback()
        unit = editing.update_unit(
            session, actor=manager, temperature_class="minus_150", reason="new model", **edit
        )
        assert unit.temperature_class.value == "minus_150"
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.entity == "storage_unit",
                                     AuditEntry.action == "update")
        ).all()
        assert {row.field for row in rows} == {"name", "temperature_class"}
        assert {row.reason for row in rows} == {"new model"}
        with pytest.raises(Conflict, match="holds 1 items"):
            editing.update_box(
                session, actor=manager, code="BOX-1", label="", ordinal=1, active=False,
                reason="broken",
            )


def test_the_bench_store_step_takes_a_box_scan_once_storage_is_set_up(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        first, second = tubes(session, tech, 2)
        # No freezers set up at RH yet: the text is the place (the caller records it).
        assert storage.store_by_scan(
            session, actor=tech, item=first, location="shelf 3", position=None
        ) is None
        freezer(session, manager)
        box(session, tech)
        with pytest.raises(ValidationError, match="not a box label"):
            storage.store_by_scan(
                session, actor=tech, item=first, location="shelf 3", position=None
            )
        placed = storage.store_by_scan(
            session, actor=tech, item=first, location=" box-1 ", position="B2"
        )
        assert (placed.position_name, placed.action) == ("B2", Action.STORE)
        perform_action(session, actor=tech, code=first.code, action=Action.CHECK_OUT)
        storage.place_item(session, actor=tech, item_scan=second.code, box_scan="BOX-1")
        back = storage.store_by_scan(
            session, actor=tech, item=session.get(Item, first.id), location="BOX-1", position=None
        )
        # Back to its kept place, not the next free one.
        assert (back.position_name, back.action) == ("B2", Action.RETURN_TO_STORAGE)
        item = session.get(Item, first.id)
        assert item.thaw_count == 1 and item.checked_out_at is None
        (returned,) = events(session, item, "return_to_storage")
        assert returned.reason.startswith("out of storage ")


def test_undo_takes_back_placements_by_scan_only(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        freezer(session, manager)
        freezer(session, manager, code="RH-F80-2")
        box(session, tech)
        (tube,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
        storage.move_box(session, actor=tech, box_scan="BOX-1", unit_code="RH-F80-2")
        (moved,) = events(session, tube, "move")
        assert not moves.undoable(moved, tech)
        with pytest.raises(Conflict, match="not a placement by scan"):
            moves.undo_placement(session, actor=tech, item_scan=tube.code, event_id=moved.id)
        item = session.get(Item, tube.id)
        assert (item.box_id, item.position) == (moved.item.box_id, 1)
