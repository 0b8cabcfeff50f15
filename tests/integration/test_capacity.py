"""The capacity report against a real database: fill per unit, rack and box, free positions by
box type, out-of-use storage, two queries whatever the size, and who sees which site."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from lims import db as lims_db
from lims.auth.services import site_by_code
from lims.errors import Forbidden, NotFound
from lims.storage import services as storage
from lims.storage.capacity import capacity_for, capacity_report
from tests.integration.people import actor
from tests.integration.test_inventory_export import small_freezer


def more_storage(session, people) -> None:
    """Beside the small freezer: an empty 8x12 box, an out-of-use 9x9 box in a second rack,
    an empty -20 °C unit, and an out-of-use unit with an empty 10x10 box."""
    manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
    storage.create_rack(session, actor=manager, unit_code="RH-F80-1", code="R2", ordinal=2)
    storage.create_box(
        session, actor=tech, code="BOX-3", unit_code="RH-F80-1", rack_code="R1", box_type="8x12",
        ordinal=2,
    )  # fmt: skip
    retired = storage.create_box(
        session, actor=tech, code="BOX-4", unit_code="RH-F80-1", rack_code="R2", box_type="9x9"
    )
    for code, temperature in (("RH-F20-1", "minus_20"), ("RH-F80-OLD", "minus_80")):
        storage.create_unit(
            session,
            actor=manager,
            code=code,
            name=f"Unit {code}",
            unit_type="freezer",
            temperature_class=temperature,
        )
    storage.create_box(session, actor=tech, code="OLD-1", unit_code="RH-F80-OLD", box_type="10x10")
    # Retiring is the storage pages' business; the report only reads the flag.
    retired.active = False
    storage.unit_by_code(session, "RH-F80-OLD").active = False
    session.commit()


@pytest.fixture
def site_storage(app, people, make_user):
    with app.app_context():
        session = lims_db.session()
        small_freezer(session, people, make_user)
        more_storage(session, people)


def counts(fill) -> tuple[int, int, int, int]:
    return fill.boxes, fill.positions, fill.used, fill.free


def test_fill_per_unit_rack_and_box_and_free_by_type(app, site_storage):
    with app.app_context():
        session = lims_db.session()
        report = capacity_report(session, site_id=site_by_code(session, "RH").id)
        assert [unit.code for unit in report.units] == ["RH-F20-1", "RH-F80-1", "RH-F80-OLD"]
        freezer = report.unit("RH-F80-1")
        # 81 + 5 + 96 + 81 places; 5 tubes in BOX-1 (the checked-out one keeps its place) and
        # 2 in the container; BOX-4 is out of use, so its 81 places are not free.
        assert counts(freezer.fill) == (4, 263, 7, 76 + 3 + 96)
        assert freezer.fill.fill_percent == 2.7
        assert counts(report.unit("RH-F20-1").fill) == (0, 0, 0, 0)
        assert report.unit("RH-F20-1").fill.fill_percent == 0.0
        assert counts(report.unit("RH-F80-OLD").fill) == (1, 100, 0, 0)
        assert [(r.code, counts(r.fill)) for r in report.racks_of(freezer.id)] == [
            ("R1", (2, 177, 5, 172)),
            ("R2", (1, 81, 0, 0)),
        ]
        boxes = {box.code: box for box in report.boxes}
        assert [box.code for box in report.boxes_of(unit_id=freezer.id)] == [
            "BOX-1", "BOX-3", "BOX-4", "BOX-2",
        ]  # fmt: skip
        assert (boxes["BOX-1"].size, boxes["BOX-1"].used, boxes["BOX-1"].free) == (81, 5, 76)
        assert boxes["BOX-1"].path == "RH-F80-1 / R1 / BOX-1"
        assert (boxes["BOX-2"].box_type, boxes["BOX-2"].size, boxes["BOX-2"].free) == (
            "container", 5, 3,
        )  # fmt: skip
        assert (boxes["BOX-4"].in_use, boxes["BOX-4"].free) == (False, 0)
        assert (boxes["OLD-1"].in_use, boxes["OLD-1"].free) == (False, 0)
        assert [(t.unit_code, t.box_type, counts(t.fill)) for t in report.free_by_type] == [
            ("RH-F80-1", "8x12", (1, 96, 0, 96)),
            ("RH-F80-1", "9x9", (2, 162, 5, 76)),
            ("RH-F80-1", "container", (1, 5, 2, 3)),
            ("RH-F80-OLD", "10x10", (1, 100, 0, 0)),
        ]
        assert {k: counts(v) for k, v in report.free_by_type_totals().items()} == {
            "10x10": (1, 100, 0, 0),
            "8x12": (1, 96, 0, 96),
            "9x9": (2, 162, 5, 76),
            "container": (1, 5, 2, 3),
        }
        assert counts(report.total) == (5, 363, 7, 175)
        assert "OUH-F80-1" not in {unit.code for unit in report.units}


def test_one_unit_and_the_network(app, site_storage):
    with app.app_context():
        session = lims_db.session()
        unit = storage.unit_by_code(session, "RH-F80-1")
        report = capacity_report(session, unit_id=unit.id)
        assert [u.code for u in report.units] == ["RH-F80-1"]
        assert {box.unit_code for box in report.boxes} == {"RH-F80-1"}
        assert [rack.code for rack in report.racks] == ["R1", "R2"]
        network = capacity_report(session)
        assert counts(network.unit("OUH-F80-1").fill) == (1, 9, 1, 8)
        assert counts(network.total) == (6, 372, 8, 183)


def test_the_report_takes_two_queries_whatever_the_size(app, site_storage):
    with app.app_context():
        session = lims_db.session()
        statements: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        site_id = site_by_code(session, "RH").id
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            capacity_report(session, site_id=site_id)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(statements) == 2, statements
        assert any("GROUP BY" in s and "count(item.id)" in s for s in statements)


def test_who_sees_which_sites_capacity(app, people, site_storage):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        report, site, unit = capacity_for(session, actor=tech)
        assert (site.code, unit) == ("RH", None) and report.unit("RH-F80-1") is not None
        for options in ({"site_code": "OUH"}, {"site_code": "*"}, {"unit_code": "OUH-F80-1"}):
            with pytest.raises(Forbidden):
                capacity_for(session, actor=tech, **options)
        report, site, _ = capacity_for(session, actor=manager, site_code="*")
        assert site is None and report.unit("OUH-F80-1") is not None
        report, site, unit = capacity_for(session, actor=manager, unit_code="ouh-f80-1")
        assert (site.code, unit.code) == ("OUH", "OUH-F80-1")
        admin = actor(session, people["admin"])
        assert capacity_for(session, actor=admin, site_code="OUH")[1].code == "OUH"
        with pytest.raises(Forbidden):
            capacity_for(session, actor=actor(session, people["researcher"]))
        with pytest.raises(NotFound, match="No storage unit NOPE"):
            capacity_for(session, actor=manager, unit_code="NOPE")
