"""Importing a freezer layout: a whole freezer at once, all or nothing, against the database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event, func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.errors import Forbidden
from lims.imports.layout import COLUMNS, import_layout
from lims.imports.tables import read_table
from lims.storage import services as storage
from lims.storage.domain import TemperatureClass
from lims.storage.models import Box, Rack, RackKind, StorageUnit, UnitType
from tests.integration.people import actor

HEADER = (
    "unit_code;unit_name;unit_type;temperature_class;rack_code;rack_kind;rack_ordinal;"
    "box_code;box_type;capacity;box_label;box_ordinal"
)
TANK = f"""{HEADER}
RH-LN2-1;LN2 tank 1;ln2_tank;ln2_vapour;T1;tower;1;BOX-A;9x9;;PBMC;1
RH-LN2-1;;;;T1;;;BOX-B;10x10;;;2
RH-LN2-1;LN2 tank 1;LN2_TANK;ln2;T2;Tower;2;BOX-C;8 x 12;;;1
RH-LN2-1;;;;T2;;;CAN-1;;12;Bag canister;2
"""


def rows(text: str):
    return read_table(text.encode(), filename="layout.csv", columns=COLUMNS)


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def counts(session) -> tuple[int, ...]:
    return tuple(count(session, model) for model in (StorageUnit, Rack, Box, AuditEntry))


def problems_of(report) -> set[tuple[int | None, str | None]]:
    return {(problem.row, problem.column) for problem in report.problems}


def test_a_whole_freezer_is_created_in_one_commit_with_its_audit_rows(app, people):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        audit_before = count(session, AuditEntry)
        commits = []
        event.listen(session, "after_commit", lambda s: commits.append(1))
        report = import_layout(
            session,
            actor=manager,
            rows=rows(TANK),
            dry_run=False,
            filename="tank.csv",
            reason="new tank",
        )
        assert report.written and report.problems == []
        assert (report.units, report.racks) == (["RH-LN2-1"], ["T1", "T2"])
        assert report.boxes == ["BOX-A", "BOX-B", "BOX-C", "CAN-1"]
        assert len(commits) == 1
        session.expire_all()
        unit = storage.unit_by_code(session, "rh-ln2-1")
        assert (unit.name, unit.unit_type, unit.temperature_class, unit.site.code) == (
            "LN2 tank 1", UnitType.LN2_TANK, TemperatureClass.LN2_VAPOUR, "RH",
        )  # fmt: skip
        tower = storage.rack_by_code(session, "T2")
        assert (tower.unit_id, tower.kind, tower.ordinal) == (unit.id, RackKind.TOWER, 2)
        box_c = storage.box_by_code(session, "BOX-C")
        assert (box_c.box_type, box_c.size, box_c.path) == ("8x12", 96, "RH-LN2-1 / T2 / BOX-C")
        canister = storage.box_by_code(session, "CAN-1")
        assert (canister.box_type, canister.capacity, canister.label, canister.ordinal) == (
            None, 12, "Bag canister", 2,
        )  # fmt: skip
        entries = list(
            session.scalars(select(AuditEntry).where(AuditEntry.seq > audit_before))
        )
        assert sorted(entry.entity for entry in entries) == sorted(
            ["storage_unit"] + ["storage_rack"] * 2 + ["storage_box"] * 4
        )
        assert {entry.reason for entry in entries} == {"layout import tank.csv: new tank"}
        assert {entry.user_id for entry in entries} == {manager.id}
        created = {json.loads(entry.new_value)["code"] for entry in entries}
        assert created == {"RH-LN2-1", "T1", "T2", "BOX-A", "BOX-B", "BOX-C", "CAN-1"}


def test_a_dry_run_reports_the_same_and_writes_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        before = counts(session)
        report = import_layout(
            session, actor=actor(session, people["manager"]), rows=rows(TANK), dry_run=True
        )
        assert report.ok and not report.written
        assert len(report.boxes) == 4 and report.units == ["RH-LN2-1"]
        assert counts(session) == before


def test_every_bad_row_is_reported_by_row_and_column_and_nothing_is_created(app, people):
    text = f"""{HEADER}
RH-F80-1;Freezer 1;freezer;minus_80;R1;rack;1;BOX-1;9x9;;;1
RH-F80-1;Freezer 1;freezer;minus_20;R1;;;BOX-2;7x7;;;1
RH-F80-2;;freezer;;R9;shelf;0;BOX-3;;;;1
RH-F80-1;;;;R1;;;BOX-1;9x9;;;1
two words;X;fridge;fridge;;;;BOX-4;9x9;5;;1
RH-F80-1;;;;R1;;;;;;;
UNIT-WITH-A-CODE-LONGER-THAN-32-X;X;fridge;fridge;;;;BOX-5;9x9;;;1
"""
    with app.app_context():
        session = lims_db.session()
        before = counts(session)
        report = import_layout(
            session, actor=actor(session, people["manager"]), rows=rows(text), dry_run=False
        )
        assert not report.ok and not report.written
        assert problems_of(report) == {
            (3, "temperature_class"),  # differs from row 2
            (3, "box_type"),  # 7x7 is no box type
            (4, "unit_name"),  # a new unit needs its name
            (4, "temperature_class"),  # ... and its temperature class
            (4, "rack_ordinal"),  # 0 is no place
            (4, "box_type"),  # neither a box type nor a capacity
            (5, "box_code"),  # BOX-1 is on row 2 already
            (6, "unit_code"),  # not a storage code
            (6, "box_type"),  # a box type and a capacity
            (8, "unit_code"),  # a storage code, but too long for a unit
        }
        by_place = {(p.row, p.column): p.message for p in report.problems}
        assert "unit RH-F80-1 is temperature class 'minus_80' on row 2" in by_place[
            (3, "temperature_class")
        ]
        assert "Box BOX-1 is on row 2 already" in by_place[(5, "box_code")]
        assert counts(session) == before


def test_a_layout_extends_an_existing_unit_and_rack_with_the_same_attributes(app, people):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        storage.create_unit(
            session, actor=manager, code="RH-F80-1", name="Freezer 1", unit_type="freezer",
            temperature_class="minus_80",
        )  # fmt: skip
        storage.create_rack(session, actor=manager, unit_code="RH-F80-1", code="R1", ordinal=1)
        storage.create_box(
            session, actor=manager, code="OLD-1", unit_code="RH-F80-1", box_type="9x9"
        )
        text = f"""{HEADER}
RH-F80-1;Freezer 1;freezer;-80 °C;R1;rack;1;NEW-1;9x9;;;2
RH-F80-1;;;;R2;shelf;2;NEW-2;10x10;;;1
RH-F80-1;;;;;;;NEW-3;;50;bin on the floor;
"""
        report = import_layout(session, actor=manager, rows=rows(text), dry_run=False)
        assert report.written, report.problems
        assert (report.units, report.racks, report.existing) == ([], ["R2"], ["RH-F80-1", "R1"])
        session.expire_all()
        unit = storage.unit_by_code(session, "RH-F80-1")
        assert count(session, StorageUnit) == 1
        assert storage.box_by_code(session, "NEW-1").rack.code == "R1"
        assert storage.box_by_code(session, "NEW-2").rack.unit_id == unit.id
        floor_bin = storage.box_by_code(session, "NEW-3")
        assert (floor_bin.unit_id, floor_bin.rack_id, floor_bin.capacity) == (unit.id, None, 50)


def test_conflicts_with_what_exists_are_reported_and_nothing_is_created(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, qp = actor(session, people["manager"]), actor(session, people["qp"])
        storage.create_unit(
            session, actor=manager, code="RH-F80-1", name="Freezer 1", unit_type="freezer",
            temperature_class="minus_80",
        )  # fmt: skip
        storage.create_rack(session, actor=manager, unit_code="RH-F80-1", code="R1")
        storage.create_box(
            session, actor=manager, code="OLD-1", unit_code="RH-F80-1", box_type="9x9"
        )
        storage.create_unit(
            session, actor=qp, code="AUH-F1", name="AUH freezer", unit_type="freezer",
            temperature_class="minus_80",
        )  # fmt: skip
        text = f"""site;{HEADER}
RH;RH-F80-1;Freezer one;ln2_tank;;;;;NEW-1;9x9;;;1
;RH-F80-1;;;;R1;tower;;OLD-1;9x9;;;1
;RH-NEW;New;fridge;fridge;R1;;;NEW-2;9x9;;;1
;AUH-F1;;;;;;;NEW-3;9x9;;;1
OUH;RH-F80-1;;;;;;;NEW-4;9x9;;;1
"""
        before = counts(session)
        report = import_layout(session, actor=manager, rows=rows(text), dry_run=False)
        assert problems_of(report) == {
            (2, "unit_name"),  # "Freezer 1" in the database
            (2, "unit_type"),  # a freezer in the database
            (3, "rack_kind"),  # R1 is a rack, not a tower
            (3, "box_code"),  # OLD-1 exists already
            (4, "rack_code"),  # R1 is in RH-F80-1
            (5, "unit_code"),  # AUH's unit
            (6, "site"),  # the manager imports for RH only
        }
        by_place = {(p.row, p.column): p.message for p in report.problems}
        assert "'Freezer 1' in the database" in by_place[(2, "unit_name")]
        assert "A box OLD-1 exists already" in by_place[(3, "box_code")]
        assert "AUH-F1 is at AUH" in by_place[(5, "unit_code")]
        assert counts(session) == before


def test_only_managers_import_a_layout(app, people):
    with app.app_context():
        session = lims_db.session()
        before = counts(session)
        for person in ("tech", "researcher", "admin"):
            with pytest.raises(Forbidden):
                import_layout(
                    session, actor=actor(session, people[person]), rows=rows(TANK), dry_run=False
                )
        assert counts(session) == before


def test_the_command_line_imports_as_a_named_manager_and_reports_refusals(
    app, people, runner, tmp_path
):
    good, bad = tmp_path / "tank.csv", tmp_path / "bad.csv"
    good.write_text(TANK, encoding="utf-8")
    bad.write_text(f"{HEADER}\nRH-X;X;freezer;minus_80;;;;B1;7x7;;;1\n", encoding="utf-8")
    manager = people["manager"].username
    dry = runner.invoke(args=["import", "layout", str(good), "--as", manager, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "Would create 1 storage unit(s), 2 rack(s) and 4 box(es)." in dry.output
    refused = runner.invoke(args=["import", "layout", str(bad), "--as", manager])
    assert refused.exit_code != 0
    assert "row 2, box_type: A box type is one of" in refused.output
    assert "1 problem(s); nothing was imported." in refused.output
    not_a_manager = runner.invoke(
        args=["import", "layout", str(good), "--as", people["tech"].username]
    )
    assert not_a_manager.exit_code != 0 and "not allowed" in not_a_manager.output
    with app.app_context():
        assert count(lims_db.session(), Box) == 0
    done = runner.invoke(
        args=["import", "layout", str(good), "--as", manager, "--reason", "tank 1 delivered"]
    )
    assert done.exit_code == 0, done.output
    with app.app_context():
        session = lims_db.session()
        assert count(session, Box) == 4
        reasons = set(
            session.scalars(select(AuditEntry.reason).where(AuditEntry.entity == "storage_box"))
        )
        assert reasons == {"layout import tank.csv: tank 1 delivered (command line)"}
