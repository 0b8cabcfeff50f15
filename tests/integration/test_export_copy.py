"""The inventory CSV written by PostgreSQL's COPY (lims.exports.copy_csv) against the pandas
path on the same data, byte for byte: every view, filter and chunk size, awkward text, every
box type, quantities and times at their edges; its audit row; a download broken off."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody.models import Item
from lims.exports import copy_csv, tables
from lims.exports.inventory import (
    RESEARCHER_COLUMNS,
    STAFF_COLUMNS,
    InventoryFilter,
    prepare_export,
)
from lims.patients.models import Episode
from lims.storage import services as storage
from tests.integration.people import actor
from tests.integration.test_inventory_export import _tubes, small_freezer

#: Each text quoted by COPY and by Python's csv module alike, or (the carriage return alone)
#: only by COPY, which the COPY path then writes again as pandas does.
PRODUCT_WITH_EVERYTHING = 'Yes, "carta"\nsecond line Ø 🧪'
PRODUCT_WITH_A_CARRIAGE_RETURN = "Car\rvykti"


def awkward_freezer(session, people, make_user) -> SimpleNamespace:
    """The small freezer of the export tests, then: boxes of every other type filled at their
    last positions, text that needs quoting, an empty study, quantities and times at edges."""
    made = small_freezer(session, people, make_user)
    tech = actor(session, people["tech"])
    episodes = session.scalars(select(Episode).order_by(Episode.id)).all()
    for code, box_type in (("BOX-8X12", "8x12"), ("BOX-10", "10x10"), ("CAS-1", "cassette-1"),
                           ("CAS-5", "cassette-5")):  # fmt: skip
        storage.create_box(
            session, actor=tech, code=code, unit_code="RH-F80-1", rack_code="R1", box_type=box_type
        )
    places = [("BOX-8X12", "H12"), ("BOX-8X12", "A1"), ("BOX-10", "J10"), ("CAS-1", "1"),
              ("CAS-5", "5"), ("CAS-5", "2")]  # fmt: skip
    tubes = _tubes(session, tech, episodes[0], "serum", len(places), "BL", -7)
    for tube, (box, position) in zip(tubes, places, strict=True):
        storage.place_item(
            session, actor=tech, item_scan=tube.code, box_scan=box, position=position
        )
    session.commit()
    codes = [tube.code for tube in tubes]
    edits = [
        ("UPDATE episode SET product_name = :v WHERE id = :id",
         {"v": PRODUCT_WITH_EVERYTHING, "id": episodes[0].id}),
        ("UPDATE episode SET product_name = :v WHERE id = :id",
         {"v": PRODUCT_WITH_A_CARRIAGE_RETURN, "id": episodes[2].id}),
        ("UPDATE episode SET protocol = '' WHERE id = :id", {"id": episodes[1].id}),
        ("UPDATE item SET timepoint = 'D-7, \"baseline\"' WHERE code = :c", {"c": codes[0]}),
        ("UPDATE item SET unit = 'µL' WHERE code = :c", {"c": codes[1]}),
    ]  # fmt: skip
    quantities = ("1.000", "0.001", "123456789.123", "0", "10.5", "2.250")
    for code, quantity in zip(codes, quantities, strict=True):
        edits.append(
            ("UPDATE item SET quantity = :q WHERE code = :c", {"q": Decimal(quantity), "c": code})
        )
    moments = [
        datetime(2024, 10, 27, 0, 59, 59, 999999, tzinfo=UTC),  # 02:59 summer time
        datetime(2024, 10, 27, 1, 0, tzinfo=UTC),  # 02:00 again, winter time
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),  # 03:00, the hour skipped
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),  # the next day and year, locally
    ]
    for code, moment in zip(codes, moments, strict=False):
        edits.append(("UPDATE item SET stored_at = :t WHERE code = :c", {"t": moment, "c": code}))
    edits.append(("UPDATE item SET collected_at = NULL WHERE code = :c", {"c": codes[-1]}))
    session.commit()
    engine = session.get_bind()
    with engine.begin() as connection:
        for statement, values in edits:
            if engine.dialect.name == "sqlite" and "t" in values:  # naive UTC text there
                values = {**values, "t": values["t"].strftime("%Y-%m-%d %H:%M:%S.%f")}
            elif engine.dialect.name == "sqlite" and "q" in values:
                values = {**values, "q": str(values["q"])}
            connection.execute(text(statement), values)
    return made


@pytest.fixture
def freezer(app, people, make_user):
    with app.app_context():
        return awkward_freezer(lims_db.session(), people, make_user)


@pytest.fixture
def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip("COPY is PostgreSQL's; SQLite writes the CSV through pandas")


def export_rows(session) -> list[dict]:
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "inventory_export").order_by(AuditEntry.seq)
    )
    return [{"actor": entry.actor, **json.loads(entry.new_value)} for entry in entries]


def both_paths(session, export) -> tuple[str, str, list[int], list[int]]:
    """The COPY path's text and progress, then the pandas path's, on the same export."""
    by_copy, by_pandas = [], []
    copied = "".join(tables.csv_text(session, export, by_copy.append, use_copy=True))
    written = "".join(tables.csv_text(session, export, by_pandas.append, use_copy=False))
    return copied, written, by_copy, by_pandas


VIEWS = [
    ("manager", {"site": "*"}, False),
    ("manager", {}, False),
    ("tech", {}, False),
    ("researcher", {}, False),
    ("manager", {"site": "*"}, True),
    ("manager", {"unit": "rh-f80-1"}, False),
    ("manager", {"rack": "R1"}, False),
    ("manager", {"box": "CAS-5"}, False),
    ("manager", {"box": "BOX-2"}, False),
    ("manager", {"study": "CART-02"}, False),
    ("manager", {"material_type": "serum"}, False),
    ("manager", {"state": "checked out"}, False),
    ("manager", {"state": "reserved", "study": "CART-02"}, False),  # nothing: the header only
    ("researcher", {"site": "OUH"}, False),
    (None, {}, False),
]


@pytest.mark.parametrize(("who", "filters", "researcher_view"), VIEWS)
def test_copy_writes_the_same_bytes_as_pandas(
    app, people, freezer, postgresql_only, who, filters, researcher_view
):
    with app.app_context():
        session = lims_db.session()
        person = actor(session, people[who]) if who else None
        export = prepare_export(
            session,
            actor=person,
            filters=InventoryFilter(**filters),
            researcher_view=researcher_view,
        )
        researcher = who == "researcher" or researcher_view
        for chunk_rows in (1, 2, 5, 5000):
            export = type(export)(**{**export.__dict__, "chunk_rows": chunk_rows})
            copied, written, copy_progress, pandas_progress = both_paths(session, export)
            assert copied.encode() == written.encode(), chunk_rows
            assert copy_progress == pandas_progress, chunk_rows
            # Both recorded the same export in the audit trail.
            first, second = export_rows(session)[-2:]
            assert first == second and first["complete"] is True
            assert first["rows"] == copy_progress[-1]
            header = copied.split("\n", 1)[0]
            assert header == ",".join(RESEARCHER_COLUMNS if researcher else STAFF_COLUMNS)


def test_the_awkward_cells_are_there(app, people, freezer, postgresql_only):
    """The comparison above is only worth something if the data holds the edge cases."""
    with app.app_context():
        session = lims_db.session()
        export = prepare_export(session, actor=None, filters=InventoryFilter())
        copied = "".join(tables.csv_text(session, export))
        for cell in (
            '"Yes, ""carta""\nsecond line Ø 🧪"',
            ",Car\rvykti,",  # unquoted, as pandas writes it
            '"D-7, ""baseline"""',
            "BOX-8X12,H12,RH-F80-1 / R1 / BOX-8X12 / H12",
            "RH-F80-1 / R1 / BOX-10 / J10",
            "CAS-5,5,RH-F80-1 / R1 / CAS-5 / 5",
            "RH-F80-1,,BOX-2,,RH-F80-1 / BOX-2,",
            ",1.0,mL,",
            ",0.001,µL,",
            ",123456789.123,mL,",
            ",0.0,mL,",
            ",10.5,mL,",
            ",2.25,mL,",
            ",0.5,mL,",
            "2024-10-27 02:59,",
            "2024-10-27 02:00,",
            "2024-03-31 03:00,",
            "2000-01-01 00:59,",
            ",BL,-7,",
        ):
            assert cell in copied, cell
        assert '"Car\rvykti"' not in copied
        # The empty study: nothing between the commas, not "".
        assert '""' not in copied.replace('""carta""', "").replace('""baseline""', "")


def test_a_researchers_copy_export_holds_no_identity_or_date(app, people, freezer, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, people["researcher"])
        export = prepare_export(session, actor=researcher, filters=InventoryFilter())
        copied = "".join(tables.csv_text(session, export))
        assert copied.split("\n", 1)[0] == ",".join(RESEARCHER_COLUMNS)
        for patient in freezer.patients:
            for identity in (patient["cpr"], patient["name"], patient["coi"]):
                assert identity not in copied
        assert "2024-" not in copied and "1999-" not in copied and "2000-" not in copied


def test_the_copy_path_is_taken_on_postgresql_only(app, backend, monkeypatch, people, freezer):
    with app.app_context():
        session = lims_db.session()
        assert copy_csv.available(session) is (backend == "postgresql")
        taken = []
        real = copy_csv.csv_chunks
        monkeypatch.setattr(copy_csv, "csv_chunks", lambda *a: taken.append(1) or real(*a))
        export = prepare_export(session, actor=None, filters=InventoryFilter())
        lines = "".join(tables.csv_text(session, export)).count("\n")
        assert taken == ([1] if backend == "postgresql" else [])
        assert lines > 10


def test_copy_streams_chunk_by_chunk(app, people, freezer, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        export = prepare_export(session, actor=None, filters=InventoryFilter(box="BOX-8X12"))
        export = type(export)(**{**export.__dict__, "chunk_rows": 1})
        pieces = list(tables.csv_text(session, export))
        # The header and a row, then a row (the product's name holds a line break).
        assert [piece.count("/ BOX-8X12 /") for piece in pieces] == [1, 1]
        assert pieces[0].startswith(",".join(STAFF_COLUMNS) + "\n")


def test_a_broken_off_copy_is_recorded_and_the_session_goes_on(
    app, people, freezer, postgresql_only
):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        export = prepare_export(session, actor=tech, filters=InventoryFilter())
        small = type(export)(**{**export.__dict__, "chunk_rows": 2})
        chunks = tables.csv_text(session, small)
        first = next(chunks)
        chunks.close()  # the browser went away after the first chunk
        assert first.startswith(",".join(STAFF_COLUMNS)) and first.count("RH-F80-1 /") == 2
        (broken,) = export_rows(session)
        assert (broken["rows"], broken["complete"]) == (2, False)
        # The connection is usable again: the next export runs to its end.
        whole = "".join(tables.csv_text(session, export))
        assert export_rows(session)[-1]["complete"] is True
        placed = select(func.count()).select_from(Item).where(Item.box_id.is_not(None))
        assert export_rows(session)[-1]["rows"] == session.scalar(
            placed.where(Item.site_id == tech.site_id)
        )
        assert whole.startswith(",".join(STAFF_COLUMNS))
