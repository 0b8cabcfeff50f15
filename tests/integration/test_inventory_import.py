"""Importing an existing inventory: tubes registered and stored at once, all or nothing."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Hold, Item, MaterialType
from lims.errors import Conflict, Forbidden, ValidationError
from lims.history.services import item_history
from lims.imports.inventory import COLUMNS, import_inventory
from lims.imports.tables import read_table
from lims.patients import services as patients
from lims.storage import services as storage
from tests.integration.people import actor, new_episode
from tests.integration.test_concurrency import at_once, postgresql_only  # noqa: F401

HEADER = (
    "coi;material_type;quantity;unit;cell_count;timepoint;timepoint_day;collected_at;"
    "box_code;position;former_label;thaw_count"
)


def rows(text: str):
    return read_table(text.encode(), filename="inventory.csv", columns=COLUMNS)


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def counts(session) -> tuple[int, ...]:
    return tuple(count(session, model) for model in (Item, CustodyEvent, AuditEntry, Hold))


def problems_of(report) -> set[tuple[int | None, str | None]]:
    return {(problem.row, problem.column) for problem in report.problems}


def unit(session, manager, code: str, temperature: str, *boxes: tuple[str, dict]) -> None:
    storage.create_unit(
        session, actor=manager, code=code, name=code, unit_type="freezer",
        temperature_class=temperature,
    )  # fmt: skip
    for box_code, options in boxes:
        storage.create_box(session, actor=manager, code=box_code, unit_code=code, **options)


@pytest.fixture
def site(app, people):
    """RH's freezers (LN2 tank, -80 °C, -20 °C) and two episodes: their CoIs."""
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        unit(session, manager, "RH-LN2", "ln2_vapour", ("LN2-BOX", {"box_type": "9x9"}))
        unit(
            session, manager, "RH-F80", "minus_80",
            ("F80-BOX", {"box_type": "10x10"}), ("F80-BIN", {"capacity": 2}),
        )  # fmt: skip
        unit(session, manager, "RH-F20", "minus_20", ("F20-BOX", {"box_type": "9x9"}))
        first, second = new_episode(session, tech, n=1), new_episode(session, tech, n=2)
        return {
            "coi": first.coi,
            "coi_k": f"{first.coi[:2]} {first.coi[2:7]} {first.coi[7:9]} {first.coi[9:]} "
            f"{first.coi_check}",
            "other": second.coi,
            "pseudonym": second.patient.pseudonym,
        }


def good_file(site) -> str:
    return f"""{HEADER}
{site["coi"]};pbmc;1,5;ml;5000000;D28;28;05-03-2024 09:15;LN2-BOX;A01;OLD-001;1
{site["coi_k"]};Plasma;0.5;mL;;D28;28;2024-03-05;F80-BOX;b3;OLD-002;
{site["other"]};serum;250;µL;;baseline;-7;2024-01-02 08:00;F80-BIN;;;0
"""


def test_a_dry_run_lists_what_would_be_created_and_writes_nothing(app, people, site):
    with app.app_context():
        session = lims_db.session()
        before = counts(session)
        report = import_inventory(
            session,
            actor=actor(session, people["manager"]),
            rows=rows(good_file(site)),
            dry_run=True,
        )
        assert report.ok and not report.written
        assert [(i.row, i.code, i.box_code, i.position, i.former_label) for i in report.items] == [
            (2, "new", "LN2-BOX", "A1", "OLD-001"),
            (3, "new", "F80-BOX", "B3", "OLD-002"),
            (4, "new", "F80-BIN", "", ""),
        ]
        assert counts(session) == before


def test_the_import_registers_and_stores_every_tube_with_events_and_audit_rows(
    app, people, site
):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        audit_before = count(session, AuditEntry)
        report = import_inventory(
            session,
            actor=manager,
            rows=rows(good_file(site)),
            dry_run=False,
            reason="moving off the spreadsheet",
            filename="inventory.csv",
        )
        assert report.written
        codes = [item.code for item in report.items]
        assert all(code.startswith("RH") and code != "new" for code in codes)
        session.expire_all()
        pbmc, plasma, serum = (storage_item(session, code) for code in codes)
        why = "inventory import inventory.csv: moving off the spreadsheet"
        assert (pbmc.state, pbmc.material_type, pbmc.quantity, pbmc.unit) == (
            State.STORED, MaterialType.PBMC, Decimal("1.5"), "mL",
        )  # fmt: skip
        assert (pbmc.cell_count, pbmc.timepoint, pbmc.timepoint_day, pbmc.thaw_count) == (
            5_000_000, "D28", 28, 1,
        )  # fmt: skip
        assert pbmc.collected_at == datetime(2024, 3, 5, 8, 15, tzinfo=UTC)  # 09:15 CET
        assert pbmc.parent_id is None and pbmc.episode.coi == site["coi"]
        assert pbmc.location == "RH-LN2 / LN2-BOX / A1" and pbmc.position == 1
        f80_box, f80_bin = (storage.box_by_code(session, code) for code in ("F80-BOX", "F80-BIN"))
        # B3 of a 10x10 box: the 13th position, row by row.
        assert (plasma.box_id, plasma.position, plasma.quantity) == (f80_box.id, 13, Decimal("0.5"))
        assert plasma.location == "RH-F80 / F80-BOX / B3"
        assert (serum.box_id, serum.position, serum.unit) == (f80_bin.id, None, "µL")
        assert serum.timepoint_day == -7 and serum.thaw_count == 0
        assert [item.code for item in storage.contents(session, f80_box)] == [plasma.code]
        for item, former in ((pbmc, "OLD-001"), (plasma, "OLD-002"), (serum, None)):
            register, store = session.scalars(
                select(CustodyEvent)
                .where(CustodyEvent.item_id == item.id)
                .order_by(CustodyEvent.id)
            )
            registered_why = why + (f"; former label {former}" if former else "")
            assert (register.action, register.reason, register.user_id) == (
                "register", registered_why, manager.id,
            )  # fmt: skip
            assert (store.action, store.from_state, store.to_state) == (
                "store", "registered", "stored",
            )  # fmt: skip
            assert store.reason == why and store.to_location == item.location
            created = session.scalar(
                select(AuditEntry).where(
                    AuditEntry.entity == "item",
                    AuditEntry.entity_id == str(item.id),
                    AuditEntry.action == "create",
                )
            )
            assert created.reason == registered_why and created.user_id == manager.id
        # A search of the audit trail by the old label finds the tube.
        found = session.scalars(
            select(AuditEntry.entity_id).where(AuditEntry.reason.contains("OLD-002"))
        ).all()
        assert found == [str(plasma.id)]
        assert count(session, AuditEntry) > audit_before
        # History copes with a tube without parent.
        history = item_history(session, actor=manager, code=pbmc.code)
        assert [line.action for line in history.events][:2] == ["register", "store"]


def storage_item(session, code: str) -> Item:
    return session.scalar(select(Item).where(Item.code == code))


def test_any_bad_row_imports_nothing_and_every_problem_is_named(app, people, site):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        import_inventory(
            session, actor=manager, dry_run=False, reason="first box",
            rows=rows(f"{HEADER}\n{site['coi']};plasma;1;mL;;;;2024-03-05;F80-BOX;A1;;\n"),
        )  # fmt: skip
        coi = site["coi"]
        text = f"""{HEADER}
{coi};plasma;1;mL;;;;2024-03-05;F80-BOX;A2;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BOX;A01;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BOX;a2;;
CHW123499ZZZZZZ;plasma;1;mL;;;;2024-03-05;F80-BOX;A3;;
{coi};pbmc;1;mL;;;;2024-03-05;F20-BOX;A1;;
{coi};plasma;1;mL;;;;2024-03-05;NO-SUCH-BOX;A1;;
{coi};leukapheresis;0;litre;10;;;2099-01-01;F80-BOX;K1;;-1
{coi};plasma;1;mL;1000;;;;F80-BOX;A4;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BIN;;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BIN;;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BIN;;;
{coi};plasma;1;mL;;;;2024-03-05;F80-BOX;;;
"""
        before = counts(session)
        report = import_inventory(
            session, actor=manager, rows=rows(text), dry_run=False, reason="legacy"
        )
        assert not report.written
        assert problems_of(report) == {
            (3, "position"),  # A1 holds the tube imported before
            (4, "position"),  # A2 is on row 2 already
            (5, "coi"),  # no such episode
            (6, "box_code"),  # PBMC at -20 °C
            (7, "box_code"),  # no such box
            # not a tube, no such unit, nothing in it, in the future, thawed -1 times, no K1
            (8, "material_type"), (8, "unit"), (8, "quantity"), (8, "collected_at"),
            (8, "thaw_count"), (8, "position"),
            (9, "cell_count"), (9, "collected_at"),  # plasma has no cell count; no date
            (12, "box_code"),  # the bin takes two
            (13, "position"),  # a box with positions needs one
        }  # fmt: skip
        by_place = {(p.row, p.column): p.message for p in report.problems}
        assert "holds" in by_place[(3, "position")] and "A1" in by_place[(3, "position")]
        assert by_place[(4, "position")] == "F80-BOX A2 is given on row 2 already."
        assert "No treatment episode" in by_place[(5, "coi")]
        assert "wrong temperature" in by_place[(6, "box_code")]
        assert "No box NO-SUCH-BOX" in by_place[(7, "box_code")]
        assert "F80-BIN is full (2 places)" in by_place[(12, "box_code")]
        assert counts(session) == before


def test_only_managers_import_and_the_real_run_needs_a_reason(app, people, site):
    with app.app_context():
        session = lims_db.session()
        before = counts(session)
        for person in ("tech", "researcher", "admin"):
            with pytest.raises(Forbidden):
                import_inventory(
                    session, actor=actor(session, people[person]), rows=rows(good_file(site)),
                    dry_run=True,
                )  # fmt: skip
        with pytest.raises(ValidationError, match="reason"):
            import_inventory(
                session, actor=actor(session, people["manager"]), rows=rows(good_file(site)),
                dry_run=False, reason="  ",
            )  # fmt: skip
        assert counts(session) == before


def test_another_sites_box_is_refused(app, people, site):
    with app.app_context():
        session = lims_db.session()
        unit(session, actor(session, people["qp"]), "AUH-F80", "minus_80",
             ("AUH-BOX", {"box_type": "9x9"}))  # fmt: skip
        report = import_inventory(
            session, actor=actor(session, people["manager"]), dry_run=True,
            rows=rows(f"{HEADER}\n{site['coi']};plasma;1;mL;;;;2024-03-05;AUH-BOX;A1;;\n"),
        )  # fmt: skip
        assert [(p.row, p.column) for p in report.problems] == [(2, "box_code")]
        assert "AUH-BOX is at AUH; you work at RH" in report.problems[0].message


def test_a_patient_who_withdrew_consent_gets_the_tube_on_hold(app, people, site):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        patients.record_consent(
            session, actor=manager, pseudonym=site["pseudonym"], biobank=False, genetic=False,
            withdrawn=True, reason="patient asked",
        )  # fmt: skip
        report = import_inventory(
            session, actor=manager, dry_run=False, reason="legacy",
            rows=rows(f"{HEADER}\n{site['other']};plasma;1;mL;;;;2024-03-05;F80-BOX;A1;;\n"),
        )  # fmt: skip
        item = storage_item(session, report.items[0].code)
        assert item.state is State.STORED
        assert session.scalar(select(Hold).where(Hold.item_id == item.id)) is not None


def test_two_imports_racing_for_one_position_leave_exactly_one(
    app, people, site, postgresql_only  # noqa: F811
):
    text = f"{HEADER}\n{site['coi']};plasma;1;mL;;;;2024-03-05;F80-BOX;J10;;\n"

    def run(session, who):
        return import_inventory(session, actor=who, rows=rows(text), dry_run=False, reason="x")

    outcomes = at_once(app, (people["manager"], run), (people["manager"], run))
    written = [o for o in outcomes if not isinstance(o, Exception) and o.written]
    refused = [o for o in outcomes if isinstance(o, Conflict) or (
        not isinstance(o, Exception) and not o.ok)]  # fmt: skip
    assert len(written) == 1 and len(refused) == 1, outcomes
    with app.app_context():
        assert count(lims_db.session(), Item) == 1


def test_the_command_line_imports_and_writes_the_new_identifiers(
    app, people, site, runner, tmp_path
):
    source, mapping = tmp_path / "legacy.csv", tmp_path / "labels.csv"
    source.write_text(good_file(site), encoding="utf-8")
    manager = people["manager"].username
    base = ["import", "inventory", str(source), "--as", manager]
    missing_reason = runner.invoke(args=base)
    assert missing_reason.exit_code != 0
    result = runner.invoke(args=[*base, "--reason", "legacy", "-o", str(mapping)])
    assert result.exit_code == 0, result.output
    assert "Registered and stored 3 tube(s)." in result.output
    with mapping.open(encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["row"], line["former_label"], line["box_code"]) for line in lines] == [
        ("2", "OLD-001", "LN2-BOX"), ("3", "OLD-002", "F80-BOX"), ("4", "", "F80-BIN"),
    ]  # fmt: skip
    again = runner.invoke(args=[*base, "--reason", "legacy"])
    assert again.exit_code != 0
    assert "row 2, position: LN2-BOX A1 holds" in again.output
    with app.app_context():
        session = lims_db.session()
        assert {storage_item(session, line["identifier"]).position for line in lines} == {
            1, 13, None,
        }  # fmt: skip
