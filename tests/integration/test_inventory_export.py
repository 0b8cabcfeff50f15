"""The freezer inventory export against a real database: a small freezer checked cell by cell,
every filter, who may export what, and no identifiers in a researcher's export."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import openpyxl
import pandas as pd
import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody import holds, production
from lims.custody.domain import Action
from lims.custody.models import Item
from lims.custody.services import perform_action
from lims.db import replayed_time
from lims.errors import Forbidden, NotFound, ValidationError
from lims.exports import inventory
from lims.exports.inventory import (
    RESEARCHER_COLUMNS,
    STAFF_COLUMNS,
    InventoryFilter,
    prepare_export,
)
from lims.identifiers import format_cpr
from lims.patients import services as patients
from lims.storage import services as storage
from tests.integration.people import actor, cpr

SUMMER = datetime(2024, 6, 3, 8, 15, tzinfo=UTC)  # 10:15 in Copenhagen (CEST)
WINTER = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)  # 13:00 in Copenhagen (CET)
DRAWN = datetime(2024, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Copenhagen


def _patient(session, tech, n: int, *, consent: bool, protocol: str):
    patient, _ = patients.register_patient(
        session,
        actor=tech,
        identifier=cpr(n),
        name=f"Patient {n}",
        treating_site_code="RH",
        consent_biobank=consent,
    )
    episode = patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name="Yescarta",
        product_kind="commercial",
        protocol=protocol,
    )
    return patient, episode


def _tubes(session, tech, episode, material, count, timepoint=None, day=None):
    draw = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=count,
        unit="mL",
        collected_at=DRAWN,
        timepoint=timepoint,
        timepoint_day=day,
    )
    return production.aliquot(
        session,
        actor=tech,
        parent_code=draw.code,
        count=count,
        quantity_each=0.5,
        unit="mL",
        material_type=material,
    )


def small_freezer(session, people, make_user) -> SimpleNamespace:
    """RH-F80-1 with rack R1 holding BOX-1 (9x9) and BOX-2 (a container for 5, no rack);
    and one tube in an OUH freezer. Three patients: 1 consents, 2 does not, 3 withdrew."""
    manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
    elsewhere = actor(session, people["elsewhere"])
    ouh_manager = actor(session, make_user("manager", site_code="OUH", full_name="Otto Boss"))
    storage.create_unit(
        session,
        actor=manager,
        code="RH-F80-1",
        name="Freezer one",
        unit_type="freezer",
        temperature_class="minus_80",
    )
    storage.create_rack(session, actor=manager, unit_code="RH-F80-1", code="R1")
    storage.create_box(
        session, actor=tech, code="BOX-1", unit_code="RH-F80-1", rack_code="R1", box_type="9x9"
    )
    storage.create_box(session, actor=tech, code="BOX-2", unit_code="RH-F80-1", capacity=5)
    storage.create_unit(
        session,
        actor=ouh_manager,
        code="OUH-F80-1",
        name="Odense freezer",
        unit_type="freezer",
        temperature_class="minus_80",
    )
    storage.create_box(session, actor=elsewhere, code="OUH-BOX", unit_code="OUH-F80-1", capacity=9)

    p1, e1 = _patient(session, tech, 1, consent=True, protocol="CART-01")
    p2, e2 = _patient(session, tech, 2, consent=False, protocol="CART-01")
    p3, e3 = _patient(session, tech, 3, consent=True, protocol="CART-02")
    plasma = _tubes(session, tech, e1, "plasma", 3, "D7", 7)
    (serum,) = _tubes(session, tech, e1, "serum", 1, "M3", 90)
    (serum_bin,) = _tubes(session, tech, e1, "serum", 1, "M3", 90)
    (no_consent,) = _tubes(session, tech, e2, "plasma", 1)
    (withdrawn,) = _tubes(session, tech, e3, "plasma", 1, "D0", 0)
    (at_ouh,) = _tubes(session, elsewhere, e1, "plasma", 1, "D7", 7)
    with replayed_time(SUMMER):
        for tube, position in zip(plasma, ("A1", "A2", "C5"), strict=True):
            storage.place_item(
                session, actor=tech, item_scan=tube.code, box_scan="BOX-1", position=position
            )
        storage.place_item(
            session, actor=tech, item_scan=serum.code, box_scan="BOX-1", position="B1"
        )
        storage.place_item(
            session, actor=tech, item_scan=no_consent.code, box_scan="BOX-1", position="B2"
        )
        storage.place_item(session, actor=elsewhere, item_scan=at_ouh.code, box_scan="OUH-BOX")
    with replayed_time(WINTER):
        for tube in (withdrawn, serum_bin):
            storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-2")
    perform_action(session, actor=tech, code=plasma[1].code, action=Action.CHECK_OUT)
    perform_action(session, actor=manager, code=serum.code, action=Action.RESERVE, internal=True)
    patients.record_consent(
        session,
        actor=tech,
        pseudonym=p3.pseudonym,
        biobank=False,
        genetic=False,
        withdrawn=True,
        reason="patient asked",
    )

    def row(tube, episode, patient, box, rack, position, timepoint, day, state, stored):
        parts = [part for part in ("RH-F80-1", rack, box, position) if part]
        return {
            "site": "RH", "unit": "RH-F80-1", "rack": rack, "box": box, "position": position,
            "location": " / ".join(parts), "code": tube.code, "check": tube.check_character,
            "kind": "Aliquot", "material_type": tube.material_type.label,
            "study": episode.protocol, "product": "Yescarta", "coi": episode.coi,
            "pseudonym": patient.pseudonym, "timepoint": timepoint, "timepoint_day": day,
            "quantity": "0.5", "quantity_unit": "mL", "state": state, "thaw_count": "0",
            "stored_at": stored, "collected_at": "2024-06-01 09:00",
        }  # fmt: skip

    summer, winter = "2024-06-03 10:15", "2024-01-15 13:00"
    in_bin = sorted([(withdrawn, e3, p3, "D0", "0"), (serum_bin, e1, p1, "M3", "90")],
                    key=lambda line: line[0].code)  # fmt: skip
    expected = [
        row(plasma[0], e1, p1, "BOX-1", "R1", "A1", "D7", "7", "stored", summer),
        row(plasma[1], e1, p1, "BOX-1", "R1", "A2", "D7", "7", "checked out", summer),
        row(serum, e1, p1, "BOX-1", "R1", "B1", "M3", "90", "reserved", summer),
        row(no_consent, e2, p2, "BOX-1", "R1", "B2", "", "", "stored", summer),
        row(plasma[2], e1, p1, "BOX-1", "R1", "C5", "D7", "7", "stored", summer),
        *(row(t, e, p, "BOX-2", "", "", tp, d, "stored", winter) for t, e, p, tp, d in in_bin),
    ]
    return SimpleNamespace(
        expected=expected,
        codes={
            "plasma": [t.code for t in plasma],
            "serum": serum.code,
            "serum_bin": serum_bin.code,
            "no_consent": no_consent.code,
            "withdrawn": withdrawn.code,
            "at_ouh": at_ouh.code,
        },
        patients=[
            {
                "cpr": cpr(n),
                "name": f"Patient {n}",
                "birth": f"196{n}-01-01",
                "coi": e.coi,
                "pseudonym": p.pseudonym,
            }
            for n, (p, e) in enumerate(((p1, e1), (p2, e2), (p3, e3)), start=1)
        ],
        ouh_manager=ouh_manager.id,
    )


def sheet_rows(source) -> list[tuple]:
    """The rows of the Inventory sheet (a path or bytes), the workbook closed again."""
    book = openpyxl.load_workbook(
        io.BytesIO(source) if isinstance(source, bytes) else source, read_only=True
    )
    try:
        return list(book["Inventory"].iter_rows(values_only=True))
    finally:
        book.close()


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def csv_of(session, who, researcher_view=False, **filters) -> pd.DataFrame:
    text = "".join(
        inventory.csv_chunks(
            session, who, InventoryFilter(**filters), researcher_view=researcher_view
        )
    )
    return read_csv(text)


def records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def export_rows(session) -> list[dict]:
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == "inventory_export")
        .order_by(AuditEntry.seq)
    )
    return [{"row": entry, **json.loads(entry.new_value)} for entry in rows]


@pytest.fixture
def freezer(app, people, make_user):
    with app.app_context():
        return small_freezer(lims_db.session(), people, make_user)


def test_a_staff_csv_holds_every_item_with_a_place_cell_by_cell(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        frame = csv_of(session, tech)
        assert list(frame.columns) == list(STAFF_COLUMNS)
        assert records(frame) == freezer.expected
        # The unplaced parents (the draws) and the tube in Odense are not in RH's inventory.
        assert freezer.codes["at_ouh"] not in set(frame["code"])
        (audit_row,) = export_rows(session)
        assert audit_row["row"].user_id == tech.id and audit_row["row"].action == "export"
        assert audit_row["row"].entity_id == "RH"
        assert (audit_row["format"], audit_row["rows"], audit_row["view"]) == ("csv", 7, "staff")
        assert audit_row["complete"] is True and audit_row["filters"] == {}


def test_the_xlsx_holds_the_same_cells_with_numbers_and_dates(app, people, freezer, tmp_path):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        seen = []
        target = tmp_path / "inventory.xlsx"
        rows = inventory.write_xlsx(session, manager, InventoryFilter(), target, seen.append)
        assert rows == 7 and seen == [7]
        header, *lines = [list(line) for line in sheet_rows(target)]
        assert header == list(STAFF_COLUMNS)
        assert len(lines) == len(freezer.expected)
        for line, expected in zip(lines, freezer.expected, strict=True):
            cells = dict(zip(header, line, strict=True))
            assert isinstance(cells["quantity"], float) and cells["quantity"] == 0.5
            assert cells["thaw_count"] == 0
            assert isinstance(cells["stored_at"], datetime)
            assert cells["stored_at"].strftime("%Y-%m-%d %H:%M") == expected["stored_at"]
            assert cells["collected_at"].strftime("%Y-%m-%d %H:%M") == expected["collected_at"]
            day = cells["timepoint_day"]
            assert ("" if day is None else str(day)) == expected["timepoint_day"]
            as_text = {
                key: "" if value is None else str(value)
                for key, value in cells.items()
                if key not in ("quantity", "thaw_count", "stored_at", "collected_at")
            }
            assert as_text == {key: expected[key] for key in as_text}
        frame = pd.read_excel(
            target, sheet_name="Inventory", engine="openpyxl", dtype=str, keep_default_na=False
        )
        assert list(frame["code"]) == [line["code"] for line in freezer.expected]
        (audit_row,) = export_rows(session)
        assert (audit_row["format"], audit_row["rows"]) == ("xlsx", 7)


def in_box_1(codes) -> list[str]:
    """BOX-1's tubes in position order: A1, A2, B1, B2, C5."""
    plasma = codes["plasma"]
    return [plasma[0], plasma[1], codes["serum"], codes["no_consent"], plasma[2]]


def in_box_2(codes) -> list[str]:
    """The container's tubes have no position: in code order."""
    return sorted([codes["withdrawn"], codes["serum_bin"]])


@pytest.mark.parametrize(
    ("filters", "expected_codes"),
    [
        ({"unit": "rh-f80-1"}, lambda c: [*in_box_1(c), *in_box_2(c)]),
        ({"rack": "R1"}, in_box_1),
        ({"box": "BOX-2"}, in_box_2),
        ({"study": "CART-02"}, lambda c: [c["withdrawn"]]),
        ({"material_type": "serum"}, lambda c: [c["serum"], c["serum_bin"]]),
        ({"material_type": "Serum", "box": "box-1"}, lambda c: [c["serum"]]),
        ({"state": "checked out"}, lambda c: [c["plasma"][1]]),
        ({"state": "reserved"}, lambda c: [c["serum"]]),
        ({"site": "OUH"}, lambda c: [c["at_ouh"]]),
        ({"site": "*", "box": "OUH-BOX"}, lambda c: [c["at_ouh"]]),
    ],
)  # fmt: skip
def test_each_filter(app, people, freezer, filters, expected_codes):
    with app.app_context():
        session = lims_db.session()
        frame = csv_of(session, actor(session, people["manager"]), **filters)
        assert list(frame["code"]) == expected_codes(freezer.codes)
        (audit_row,) = export_rows(session)
        assert audit_row["filters"] == filters and audit_row["rows"] == len(frame)


def test_a_manager_exports_any_site_a_technician_only_their_own(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        everything = csv_of(session, manager, site="*")
        assert everything["site"].tolist() == ["OUH"] + ["RH"] * 7  # in site order
        for filters in ({"site": "OUH"}, {"site": "*"}, {"box": "OUH-BOX"}):
            with pytest.raises(Forbidden):
                prepare_export(session, actor=tech, filters=InventoryFilter(**filters))
        assert len(export_rows(session)) == 1  # refusals export nothing and record nothing
        # The command line exports the whole network.
        assert len(csv_of(session, None)) == 8


@pytest.mark.parametrize(
    ("filters", "error", "message"),
    [
        ({"site": "XX"}, NotFound, "No site"),
        ({"unit": "NOPE"}, NotFound, "No storage unit NOPE"),
        ({"rack": "NOPE"}, NotFound, "No rack NOPE"),
        ({"box": "NOPE"}, NotFound, "No box NOPE"),
        ({"study": "NOPE"}, NotFound, "No study 'NOPE'"),
        ({"material_type": "blood"}, ValidationError, "Unknown material type 'blood'"),
        ({"state": "discarded"}, ValidationError, "not a state of stored material"),
        ({"unit": "OUH-F80-1", "box": "BOX-1"}, ValidationError, "Box BOX-1 is not in OUH-F80-1"),
        ({"site": "OUH", "unit": "RH-F80-1"}, ValidationError, "RH-F80-1 is at RH, not OUH"),
    ],
)
def test_unknown_or_mismatched_filters_are_refused_clearly(
    app, people, freezer, filters, error, message
):
    with app.app_context():
        session = lims_db.session()
        with pytest.raises(error, match=re.escape(message)):
            prepare_export(
                session, actor=actor(session, people["manager"]), filters=InventoryFilter(**filters)
            )


def identities(freezer) -> list[str]:
    """Every way a patient's CPR, name, birth date or CoI could be written."""
    found = []
    for patient in freezer.patients:
        number, birth = patient["cpr"], patient["birth"]
        year, month, day = birth.split("-")
        found += [
            number,
            format_cpr(number),
            patient["name"],
            birth,
            f"{day}-{month}-{year}",
            f"{day}.{month}.{year}",
            f"{day}{month}{year[2:]}",
            patient["coi"],
        ]
    return found


DATE_OR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[-./]\d{2}[-./]\d{2,4}|\d{1,2}:\d{2}")


def test_a_researchers_export_has_no_identifiers_and_only_consenting_stored_aliquots(
    app, people, freezer, tmp_path
):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, people["researcher"])
        text = "".join(inventory.csv_chunks(session, researcher, InventoryFilter()))
        frame = read_csv(text)
        assert list(frame.columns) == list(RESEARCHER_COLUMNS)
        # Patient 1's stored tubes across the network (Odense too); not the checked-out or
        # reserved ones, not patient 2 (no consent), not patient 3 (withdrew).
        codes = freezer.codes
        assert sorted(frame["code"]) == sorted(
            [codes["plasma"][0], codes["plasma"][2], codes["serum_bin"], codes["at_ouh"]]
        )
        staff_rows = {line["code"]: line for line in freezer.expected}
        first = frame[frame["code"] == codes["plasma"][0]].iloc[0].to_dict()
        assert first == {key: staff_rows[codes["plasma"][0]][key] for key in RESEARCHER_COLUMNS}
        assert set(frame["pseudonym"]) == {freezer.patients[0]["pseudonym"]}

        target = tmp_path / "researcher.xlsx"
        inventory.write_xlsx(session, researcher, InventoryFilter(), target)
        cells = [
            "" if value is None else str(value) for line in sheet_rows(target) for value in line
        ]
        for content in (text, "\n".join(cells)):
            for identity in identities(freezer):
                assert identity not in content, identity
            assert DATE_OR_TIME.search(content) is None, DATE_OR_TIME.search(content)
        views = {entry["view"] for entry in export_rows(session)}
        assert views == {"researcher"}
        with pytest.raises(ValidationError, match="stored material only"):
            prepare_export(session, actor=researcher, filters=InventoryFilter(state="reserved"))


def test_held_material_is_not_in_a_researchers_export_until_cleared(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, people["researcher"])
        manager = actor(session, people["manager"])
        held = freezer.codes["plasma"][0]
        item = session.scalar(select(Item).where(Item.code == held))
        hold = holds.place_hold(
            session, actor=manager, item=item, reason="other", detail="tube cracked?"
        )
        assert held not in set(csv_of(session, researcher)["code"])
        assert held in set(csv_of(session, manager)["code"])  # staff see it, state and all
        holds.clear_hold(session, actor=manager, hold_id=hold.id, reason="checked: intact")
        assert held in set(csv_of(session, researcher)["code"])


def test_staff_may_ask_for_the_researchers_view(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        frame = csv_of(session, actor(session, people["manager"]), researcher_view=True)
        assert list(frame.columns) == list(RESEARCHER_COLUMNS)
        assert len(frame) == 3  # RH only: the manager's own site by default


def test_an_empty_export_still_has_its_header(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        text = "".join(
            inventory.csv_chunks(
                session, actor(session, people["tech"]), InventoryFilter(study="CART-02",
                                                                         state="reserved")
            )
        )
        assert text.strip() == ",".join(STAFF_COLUMNS)
        (audit_row,) = export_rows(session)
        assert audit_row["rows"] == 0


def test_chunks_are_written_one_after_another(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        export = prepare_export(
            session, actor=actor(session, people["tech"]), filters=InventoryFilter()
        )
        small = type(export)(**{**export.__dict__, "chunk_rows": 3})
        seen: list[int] = []
        stream = io.StringIO()
        rows = inventory.write_export_csv(session, small, stream, seen.append)
        assert (rows, seen) == (7, [3, 6, 7])
        assert records(read_csv(stream.getvalue())) == freezer.expected


def test_an_xlsx_longer_than_a_sheet_goes_on_in_the_next(
    app, people, freezer, tmp_path, monkeypatch
):
    with app.app_context():
        session = lims_db.session()
        export = prepare_export(
            session, actor=actor(session, people["tech"]), filters=InventoryFilter()
        )
        target = tmp_path / "long.xlsx"
        monkeypatch.setattr(inventory.tables, "XLSX_SHEET_ROWS", 3)
        assert inventory.tables.write_xlsx(session, export, target, None) == 7
        book = openpyxl.load_workbook(target, read_only=True)
        try:
            assert book.sheetnames == ["Inventory", "Inventory 2", "Inventory 3"]
            sheets = [list(book[name].iter_rows(values_only=True)) for name in book.sheetnames]
        finally:
            book.close()
        assert [len(rows) for rows in sheets] == [4, 4, 2]
        assert all(rows[0] == STAFF_COLUMNS for rows in sheets)
        codes = [line[STAFF_COLUMNS.index("code")] for rows in sheets for line in rows[1:]]
        assert codes == [line["code"] for line in freezer.expected]


def test_an_abandoned_download_is_recorded_as_incomplete(app, people, freezer):
    with app.app_context():
        session = lims_db.session()
        export = prepare_export(
            session, actor=actor(session, people["tech"]), filters=InventoryFilter()
        )
        small = type(export)(**{**export.__dict__, "chunk_rows": 2})
        chunks = inventory.tables.csv_text(session, small)
        next(chunks)
        chunks.close()  # the browser went away after the first chunk
        (audit_row,) = export_rows(session)
        assert (audit_row["rows"], audit_row["complete"]) == (2, False)
