"""kill -9 of a worker in the middle of a box move, an aliquoting run and an inventory import.

Each operation runs in its own process (``tests/faults/worker.py``: its own app and database
connection) and stops half way through its one transaction, after rows of the operation were
written. The test kills it with SIGKILL and then checks, in its own session, that nothing of
the operation is left: every table holds exactly the rows it held before, every item is in
exactly one place (its old one), the audit chain verifies and its head matches the row count.
The same operation then runs again and succeeds: no lock was left behind (PostgreSQL rolls the
dead client's transaction back and ends its backend; SQLite ignores the uncommitted pages left
in its write-ahead log and the write lock died with the process).
"""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text

from lims import db as lims_db
from lims.auth.models import User
from lims.custody import production
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Item
from lims.imports.inventory import import_inventory_file
from lims.storage import services as storage
from lims.storage.models import Box, StorageUnit
from tests.faults.conftest import (
    assert_chain_intact,
    checkpoint_sqlite,
    differences,
    run_and_kill,
    snapshot,
    sqlite_integrity,
    wait_for_backend_end,
)
from tests.integration.people import new_episode

BOX_TUBES = 80
ALIQUOTS = 200
IMPORT_ROWS = 200
ITEMS = Item.__table__.name
EVENTS = CustodyEvent.__table__.name


@pytest.fixture
def lab(app, make_site, make_user) -> SimpleNamespace:
    """RH with a manager, a technician, two -80 °C freezers and one treatment episode."""
    make_site("RH", isbt_fin="W1234")
    manager = make_user("manager", site_code="RH", full_name="Mona Manager")
    tech = make_user("technician", site_code="RH", full_name="Tina Tech")
    with app.app_context():
        session = lims_db.session()
        for code in ("RH-F80-A", "RH-F80-B"):
            storage.create_unit(
                session,
                actor=session.get(User, manager.id),
                code=code,
                name=f"Freezer {code}",
                unit_type="freezer",
                temperature_class="minus_80",
            )
        episode = new_episode(session, session.get(User, tech.id), n=1)
        return SimpleNamespace(manager=manager, tech=tech, coi=episode.coi)


def draw(session, tech: User, coi: str, millilitres: int) -> Item:
    return production.register_sample(
        session,
        actor=tech,
        coi=coi,
        material_type="whole_blood",
        quantity=millilitres,
        unit="mL",
        collected_at=lims_db.utcnow(),
    )


def misplaced(session) -> list[tuple]:
    """Positions held by more than one item, and stored items without a box: none allowed."""
    shared = session.execute(
        select(Item.box_id, Item.position, func.count())
        .where(Item.position.is_not(None))
        .group_by(Item.box_id, Item.position)
        .having(func.count() > 1)
    ).all()
    boxless = session.execute(
        select(Item.code).where(
            Item.state.in_([State.STORED, State.RESERVED]), Item.box_id.is_(None)
        )
    ).all()
    return [tuple(row) for row in (*shared, *boxless)]


def limit_lock_waits(session, backend: str) -> None:
    """A lock left by the killed worker makes the re-run fail in seconds instead of hanging
    (SQLite's busy timeout, 5 s, does the same there)."""
    if backend == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '5s'"))


def kill_half_way(app, backend, tmp_path, job) -> SimpleNamespace:
    """Run the job in a worker, kill it at its pause; the database before and after."""
    engine = app.extensions["lims_engine"]
    if backend == "sqlite":
        checkpoint_sqlite(engine)
    before = snapshot(engine)
    killed = run_and_kill(job, tmp_path / f"worker-{job['operation']}.log")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    report = killed.report
    # The worker's own transaction saw its audit rows chained on the head (uncommitted).
    assert report["audit_head_seq"] == report["audit_rows"] > len(before["audit_entry"])
    if backend == "postgresql":
        wait_for_backend_end(engine, report["backend_pid"])
    else:
        # Uncommitted pages reached the write-ahead log before the kill; a reader ignores them.
        assert report["wal_bytes"] > 0
        assert sqlite_integrity(engine) == "ok"
    changed = differences(before, snapshot(engine))
    assert not changed, "the killed operation left rows behind: " + "; ".join(changed)
    return SimpleNamespace(before=before, report=report)


def test_a_box_move_killed_half_way_leaves_every_tube_in_its_old_place(
    app, backend, lab, worker_job, tmp_path
):
    with app.app_context():
        session = lims_db.session()
        tech = session.get(User, lab.tech.id)
        storage.create_box(
            session, actor=tech, code="BOX-M", unit_code="RH-F80-A", box_type="10x10"
        )
        sample = draw(session, tech, lab.coi, BOX_TUBES)
        tubes = production.aliquot(
            session,
            actor=tech,
            parent_code=sample.code,
            count=BOX_TUBES,
            quantity_each=1,
            unit="mL",
            material_type="plasma",
        )
        codes = [tube.code for tube in tubes]
        for code in codes:
            storage.place_item(session, actor=tech, item_scan=code, box_scan="BOX-M")

    job = worker_job(
        "move_box",
        lab.tech.username,
        BOX_TUBES // 2,
        box="BOX-M",
        unit="RH-F80-B",
        reason="fault test",
    )
    run = kill_half_way(app, backend, tmp_path, job)
    # Half the tubes had their move written when the worker died.
    assert run.report["custody_events"] == len(run.before[EVENTS]) + BOX_TUBES // 2

    with app.app_context():
        session = lims_db.session()
        box = session.scalar(select(Box).where(Box.code == "BOX-M"))
        assert box.unit.code == "RH-F80-A"
        placed = session.execute(
            select(Item.code, Item.position, Item.location, Item.state)
            .where(Item.box_id == box.id)
            .order_by(Item.position)
        ).all()
        assert [row.code for row in placed] == codes
        assert [row.position for row in placed] == list(range(1, BOX_TUBES + 1))
        assert {row.location.split(" / ")[0] for row in placed} == {"RH-F80-A"}
        assert {row.state for row in placed} == {State.STORED}
        assert misplaced(session) == []
        assert (
            session.scalar(
                select(func.count()).select_from(CustodyEvent).where(CustodyEvent.action == "move")
            )
            == 0
        )
        chain = assert_chain_intact(session)
        assert chain.rows == len(run.before["audit_entry"])

        # The same move again, in this process: nothing is locked any more.
        limit_lock_waits(session, backend)
        moved = storage.move_box(
            session,
            actor=session.get(User, lab.tech.id),
            box_scan="BOX-M",
            unit_code="RH-F80-B",
            reason="fault test",
        )
        assert [item.code for item in moved] == codes
    with app.app_context():
        session = lims_db.session()
        unit_b = session.scalar(select(StorageUnit.id).where(StorageUnit.code == "RH-F80-B"))
        assert session.scalar(select(Box.unit_id).where(Box.code == "BOX-M")) == unit_b
        locations = session.scalars(select(Item.location).where(Item.code.in_(codes))).all()
        assert {location.split(" / ")[0] for location in locations} == {"RH-F80-B"}
        reasons = session.scalars(
            select(CustodyEvent.reason).where(CustodyEvent.action == "move")
        ).all()
        assert reasons == ["fault test"] * BOX_TUBES
        assert misplaced(session) == []
        assert assert_chain_intact(session).rows > len(run.before["audit_entry"])


def test_an_aliquoting_run_killed_half_way_creates_no_tube_and_takes_no_volume(
    app, backend, lab, worker_job, tmp_path
):
    with app.app_context():
        session = lims_db.session()
        sample = draw(session, session.get(User, lab.tech.id), lab.coi, ALIQUOTS)
        parent = sample.code

    job = worker_job(
        "aliquot",
        lab.tech.username,
        ALIQUOTS // 2,
        parent=parent,
        count=ALIQUOTS,
        quantity_each="0.5",
        unit="mL",
        material_type="plasma",
    )
    run = kill_half_way(app, backend, tmp_path, job)
    assert run.report["items"] == len(run.before[ITEMS]) + ALIQUOTS // 2
    # The parent's "aliquot" event and a registration event per tube written so far.
    assert run.report["custody_events"] == len(run.before[EVENTS]) + 1 + ALIQUOTS // 2

    with app.app_context():
        session = lims_db.session()
        sample = session.scalar(select(Item).where(Item.code == parent))
        assert sample.quantity == ALIQUOTS
        assert (
            session.scalar(
                select(func.count()).select_from(Item).where(Item.parent_id == sample.id)
            )
            == 0
        )
        assert assert_chain_intact(session).rows == len(run.before["audit_entry"])

        limit_lock_waits(session, backend)
        children = production.aliquot(
            session,
            actor=session.get(User, lab.tech.id),
            parent_code=parent,
            count=ALIQUOTS,
            quantity_each="0.5",
            unit="mL",
            material_type="plasma",
        )
        assert [child.aliquot_number for child in children] == list(range(1, ALIQUOTS + 1))
    with app.app_context():
        session = lims_db.session()
        sample = session.scalar(select(Item).where(Item.code == parent))
        assert sample.quantity == ALIQUOTS // 2
        codes = session.scalars(select(Item.code).where(Item.parent_id == sample.id)).all()
        assert len(set(codes)) == ALIQUOTS
        assert misplaced(session) == []
        assert assert_chain_intact(session).rows > len(run.before["audit_entry"])


def inventory_csv(coi: str) -> str:
    lines = ["coi;material_type;quantity;unit;collected_at;box_code;position;former_label"]
    for n in range(IMPORT_ROWS):
        box, position = f"IMP-{n // 100 + 1}", n % 100 + 1
        lines.append(f"{coi};plasma;0,5;mL;05-03-2024 09:15;{box};{position};OLD-{n:03d}")
    return "\n".join(lines) + "\n"


def test_an_import_killed_half_way_registers_and_stores_nothing(
    app, backend, lab, worker_job, tmp_path
):
    with app.app_context():
        session = lims_db.session()
        manager = session.get(User, lab.manager.id)
        for code in ("IMP-1", "IMP-2"):
            storage.create_box(
                session, actor=manager, code=code, unit_code="RH-F80-A", box_type="10x10"
            )
    upload = tmp_path / "inventory.csv"
    upload.write_text(inventory_csv(lab.coi), encoding="utf-8")

    job = worker_job(
        "import", lab.manager.username, IMPORT_ROWS // 2, file=str(upload), reason="fault test"
    )
    run = kill_half_way(app, backend, tmp_path, job)
    assert run.report["items"] == len(run.before[ITEMS]) + IMPORT_ROWS // 2
    # A registration and a store event per tube written so far.
    assert run.report["custody_events"] == len(run.before[EVENTS]) + IMPORT_ROWS

    with app.app_context():
        session = lims_db.session()
        boxes = session.scalars(select(Box.id).where(Box.code.in_(["IMP-1", "IMP-2"]))).all()
        assert (
            session.scalar(select(func.count()).select_from(Item).where(Item.box_id.in_(boxes)))
            == 0
        )
        assert assert_chain_intact(session).rows == len(run.before["audit_entry"])

        limit_lock_waits(session, backend)
        report = import_inventory_file(
            session,
            actor=session.get(User, lab.manager.id),
            data=upload.read_bytes(),
            filename=upload.name,
            dry_run=False,
            reason="fault test",
        )
        assert report.written, report.problems
    with app.app_context():
        session = lims_db.session()
        stored = session.execute(
            select(Box.code, func.count(), func.min(Item.position), func.max(Item.position))
            .join(Item, Item.box_id == Box.id)
            .group_by(Box.code)
            .order_by(Box.code)
        ).all()
        assert [tuple(row) for row in stored] == [("IMP-1", 100, 1, 100), ("IMP-2", 100, 1, 100)]
        assert misplaced(session) == []
        assert (
            session.scalar(
                select(func.count()).select_from(CustodyEvent).where(CustodyEvent.action == "store")
            )
            == IMPORT_ROWS
        )
        assert assert_chain_intact(session).rows > len(run.before["audit_entry"])
