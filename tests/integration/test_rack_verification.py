"""Rack-scanner verification against a real database: every finding, refusals that change
nothing, and the signed acceptance that relocates tubes with custody events."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry, ESignature
from lims.custody import production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import perform_action
from lims.errors import Conflict, Forbidden, ValidationError
from lims.patients.models import Patient
from lims.storage import services as storage
from lims.storage import verification as service
from lims.storage import verification_accept as accepting
from lims.storage.rackscan import RackScanError
from lims.storage.verification_models import (
    Finding,
    RackVerification,
    RackVerificationLine,
    VerificationStatus,
)
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode
from tests.integration.test_concurrency import at_once, postgresql_only  # noqa: F401
from tests.integration.test_storage import box, events, freezer


def tubes(session, tech, n: int, material: str = "plasma") -> list[Item]:
    """``n`` registered aliquots of a new patient (numbered from the patients there are, so
    that the CPR numbers stay valid however many tests run in one process)."""
    patients = session.scalar(select(func.count()).select_from(Patient))
    episode = new_episode(session, tech, n=patients + 1)
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


def scan_file(rows: dict[str, str], rack: str | None = None) -> bytes:
    """A FluidX-style file: rack, position and code on every row (rack optional)."""
    lines = [f"{rack},{pos},{code}" if rack else f"{pos},{code}" for pos, code in rows.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def setup(session, people, n: int = 3):
    """Box BOX-1 (9x9 at RH) with ``n`` tubes stored in A1, A2, ..."""
    manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
    freezer(session, manager)
    box(session, tech)
    placed = tubes(session, tech, n)
    for index, tube in enumerate(placed, 1):
        storage.place_item(
            session, actor=tech, item_scan=tube.code, box_scan="BOX-1", position=f"A{index}"
        )
    return manager, tech, placed


def verify(session, who, rows, *, box_code="BOX-1", rack=None, name="scan.csv"):
    return service.verify_box(
        session,
        actor=who,
        box_code=box_code,
        file_bytes=scan_file(rows, rack) if isinstance(rows, dict) else rows,
        filename=name,
    )


def findings(report) -> dict[tuple[str, str], str | None]:
    """(finding, position name) -> item code, for every line."""
    geometry = report.box.geometry
    return {
        (
            line.finding.value,
            geometry.name(line.position or line.recorded_position),
        ): (line.item.code if line.item else line.scanned_code)
        for line in report.lines
    }


def counts(session) -> tuple[int, ...]:
    return tuple(
        session.scalar(select(func.count()).select_from(model))
        for model in (RackVerification, RackVerificationLine, AuditEntry, CustodyEvent)
    )


def place(session, item) -> tuple[int | None, int | None, State]:
    session.refresh(item)
    return item.box_id, item.position, item.state


def test_a_scan_as_recorded_is_clean_at_once(app, people):
    with app.app_context():
        session = lims_db.session()
        _, tech, (a, b, c) = setup(session, people)
        rows = {"A01": a.code, "A02": b.code, "A03": c.code, "A04": ""}
        report = verify(session, tech, rows, name="scan\x00.csv")
        assert report.status is VerificationStatus.CLEAN
        assert findings(report) == {
            ("matched", "A1"): a.code,
            ("matched", "A2"): b.code,
            ("matched", "A3"): c.code,
        }
        (row,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "rack_verification", AuditEntry.action == "create"
            )
        )
        assert row.user_id == tech.id and row.entity_id == str(report.id)
        assert json.loads(row.new_value)["status"] == "clean"
        assert row.reason == "rack scan scan.csv: 3 matched"
        with pytest.raises(Conflict, match="nothing to accept"):
            accepting.accept_verification(
                session,
                actor=actor(session, people["manager"]),
                verification_id=report.id,
                password=PASSWORD,
            )


def discrepancies(session, people):
    """A box with one of each finding; returns the report and the tubes by role."""
    manager, tech, (kept, swapped, gone, out, hidden) = setup(session, people, 5)
    perform_action(session, actor=tech, code=out.code, action=Action.CHECK_OUT)
    box(session, tech, code="BOX-2")
    elsewhere, never = tubes(session, tech, 2)
    storage.place_item(
        session, actor=tech, item_scan=elsewhere.code, box_scan="BOX-2", position="C3"
    )
    rows = {
        "A1": kept.code,  # matched
        "A2": "",  # swapped was recorded here ...
        "B1": swapped.code,  # ... and read here: misplaced
        "A3": "",  # gone: missing
        "A4": "",  # out: checked out, its place kept
        "A5": "NO READ",  # hidden: not read, not called missing
        "C1": elsewhere.code,  # recorded in BOX-2: unexpected
        "C2": never.code,  # registered, never stored: unexpected
        "C3": "FOREIGN0001",  # unknown to the LIMS: unexpected
    }
    report = verify(session, tech, rows, rack="BOX-1")
    tubes_by_role = dict(
        kept=kept, swapped=swapped, gone=gone, out=out, hidden=hidden, elsewhere=elsewhere,
        never=never,
    )  # fmt: skip
    return manager, tech, report, tubes_by_role


def test_each_discrepancy_type_is_found(app, people):
    with app.app_context():
        session = lims_db.session()
        _, _, report, t = discrepancies(session, people)
        assert report.status is VerificationStatus.PENDING and report.rack_id == "BOX-1"
        assert findings(report) == {
            ("matched", "A1"): t["kept"].code,
            ("misplaced", "B1"): t["swapped"].code,
            ("unexpected", "C1"): t["elsewhere"].code,
            ("unexpected", "C2"): t["never"].code,
            ("unexpected", "C3"): "FOREIGN0001",
            ("unreadable", "A5"): t["hidden"].code,
            ("missing", "A3"): t["gone"].code,
            ("checked_out", "A4"): t["out"].code,
        }
        misplaced = report.lines_of(Finding.MISPLACED)[0]
        assert (misplaced.recorded_position, misplaced.position) == (2, 10)
        never = next(line for line in report.lines if line.scanned_code == t["never"].code)
        assert never.recorded_state == "registered" and never.recorded_position is None
        elsewhere = next(line for line in report.lines if line.scanned_code == t["elsewhere"].code)
        assert elsewhere.recorded_location.endswith("BOX-2 / C3")
        assert len(report.discrepancies) == 6


def test_a_malformed_file_is_refused_and_nothing_changes(app, people):
    with app.app_context():
        session = lims_db.session()
        _, tech, (a, b, _) = setup(session, people)
        before = counts(session)
        with pytest.raises(RackScanError) as caught:
            verify(session, tech, f"A1,{a.code}\nA1,{b.code}\nQQ,X\n".encode())
        assert caught.value.problems == [
            "line 2: position A1 again (first on line 1)",
            "line 3: 'QQ' is not a position (A1 or A01)",
        ]
        with pytest.raises(RackScanError) as caught:
            verify(session, tech, {"A1": a.code, "J1": b.code, "A10": "X"})
        assert caught.value.problems == [
            "line 2: J1 is outside this box (A1–I9).",
            "line 3: A10 is outside this box (A1–I9).",
        ]
        with pytest.raises(ValidationError, match="scan of rack BOX-7, not of box BOX-1"):
            verify(session, tech, {"A1": a.code}, rack="BOX-7")
        session.rollback()
        box(session, tech, code="BIN-1", box_type=None, capacity=5)
        with pytest.raises(Conflict, match="container without positions"):
            verify(session, tech, {"A1": a.code}, box_code="BIN-1")
        session.rollback()
        with pytest.raises(Forbidden):
            verify(session, actor(session, people["researcher"]), {"A1": a.code})
        with pytest.raises(Forbidden, match="you work at OUH"):
            verify(session, actor(session, people["elsewhere"]), {"A1": a.code})
        session.rollback()
        after = counts(session)
        # Only the bin's creation (its audit row) happened in between.
        assert after[:2] == before[:2] and after[3] == before[3]
        assert after[2] == before[2] + 1


def test_acceptance_relocates_with_custody_events_and_audit_rows(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, _, report, t = discrepancies(session, people)
        gone = report.lines_of(Finding.MISSING)[0]
        accepted = accepting.accept_verification(
            session,
            actor=manager,
            verification_id=report.id,
            password=PASSWORD,
            note="found after the freezer defrost",
            missing={gone.id: "lost"},
        )
        assert accepted.status is VerificationStatus.ACCEPTED
        assert accepted.accepted_by_id == manager.id and accepted.accepted_at is not None
        signature = session.get(ESignature, accepted.signature_id)
        assert (signature.meaning, signature.user_id) == ("verified", manager.id)
        box_1 = storage.box_by_code(session, "BOX-1")
        assert place(session, t["swapped"]) == (box_1.id, 10, State.STORED)  # B1
        assert place(session, t["elsewhere"]) == (box_1.id, 19, State.STORED)  # C1
        assert place(session, t["never"]) == (box_1.id, 20, State.STORED)  # C2
        assert place(session, t["gone"]) == (None, None, State.LOST)
        assert place(session, t["kept"]) == (box_1.id, 1, State.STORED)
        assert place(session, t["hidden"]) == (box_1.id, 5, State.STORED)
        assert place(session, t["out"]) == (box_1.id, 4, State.CHECKED_OUT)
        assert session.scalar(select(Item).where(Item.code == "FOREIGN0001")) is None
        move = events(session, t["swapped"], Action.MOVE)[-1]
        assert move.signature_id == signature.id and move.to_location.endswith("BOX-1 / B1")
        assert move.from_location.endswith("BOX-1 / A2")
        assert f"verification {report.id}" in move.reason and "defrost" in move.reason
        assert events(session, t["elsewhere"], Action.MOVE)[-1].from_location.endswith("C3")
        assert events(session, t["never"], Action.STORE)[-1].signature_id == signature.id
        lost = events(session, t["gone"], Action.LOSE)[-1]
        assert lost.reason.startswith("not found in rack scan of BOX-1")
        resolutions = {line.finding.value + (line.scanned_code or ""): line.resolution
                       for line in accepted.lines if line.resolution}  # fmt: skip
        assert resolutions == {
            "misplaced" + t["swapped"].code: "moved to B1",
            "unexpected" + t["elsewhere"].code: "moved to C1",
            "unexpected" + t["never"].code: "stored at C2",
            "unexpectedFOREIGN0001": "unknown to the LIMS: not recorded",
            "unreadable": "not read: nothing changed",
            "missing": "recorded lost",
        }
        rows = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "rack_verification", AuditEntry.entity_id == str(report.id)
            )
        )
        assert {row.action for row in rows} == {"create", "sign", "accept"}
        item_rows = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "item", AuditEntry.entity_id == str(t["swapped"].id)
            )
        )
        assert {"unplace", "move"} <= {row.action for row in item_rows}
        with pytest.raises(Conflict, match="accepted already"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password=PASSWORD
            )


def test_two_swapped_tubes_are_swapped_back_in_the_records(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech, (a, b, c) = setup(session, people)
        report = verify(session, tech, {"A1": b.code, "A2": a.code, "A3": c.code})
        assert {line.finding for line in report.discrepancies} == {Finding.MISPLACED}
        accepting.accept_verification(
            session, actor=manager, verification_id=report.id, password=PASSWORD
        )
        assert place(session, a)[:2] == (report.box_id, 2)
        assert place(session, b)[:2] == (report.box_id, 1)
        assert len(events(session, a, Action.MOVE)) == len(events(session, b, Action.MOVE)) == 1
        assert events(session, c, Action.MOVE) == []


def test_refusals_of_the_acceptance_change_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech, report, t = discrepancies(session, people)
        gone = report.lines_of(Finding.MISSING)[0]
        before = counts(session)
        with pytest.raises(Forbidden):
            accepting.accept_verification(
                session, actor=tech, verification_id=report.id, password=PASSWORD,
                missing={gone.id: "lost"},
            )  # fmt: skip
        with pytest.raises(ValidationError, match="Choose for"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password=PASSWORD
            )
        with pytest.raises(ValidationError, match="password for the signature is wrong"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password="wrong",
                missing={gone.id: "lost"},
            )  # fmt: skip
        with pytest.raises(ValidationError, match="does not miss"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password=PASSWORD,
                missing={gone.id: "lost", 999_999: "lost"},
            )  # fmt: skip
        session.rollback()
        assert counts(session) == before
        session.refresh(report)
        assert report.status is VerificationStatus.PENDING
        assert place(session, t["swapped"])[:2] == (report.box_id, 2)


def test_refused_when_the_box_changed_since_the_scan(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech, (a, b, _) = setup(session, people)
        report = verify(session, tech, {"A1": b.code, "A2": a.code})
        (late,) = tubes(session, tech, 1)
        storage.place_item(session, actor=tech, item_scan=late.code, box_scan="BOX-1")
        before = counts(session)
        with pytest.raises(Conflict, match="scan the box again"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password=PASSWORD,
                missing={line.id: "leave" for line in report.lines_of(Finding.MISSING)},
            )  # fmt: skip
        session.rollback()
        assert counts(session) == before
        assert place(session, a)[:2] == (report.box_id, 1)


def test_a_new_scan_supersedes_the_pending_report(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech, (a, b, c) = setup(session, people)
        first = verify(session, tech, {"A1": a.code, "A2": b.code})
        assert first.status is VerificationStatus.PENDING  # c missing
        second = verify(session, tech, {"A1": a.code, "A2": b.code, "A3": c.code})
        session.refresh(first)
        assert (first.status, second.status) == (
            VerificationStatus.SUPERSEDED,
            VerificationStatus.CLEAN,
        )
        with pytest.raises(Conflict, match="newer scan"):
            accepting.accept_verification(
                session, actor=manager, verification_id=first.id, password=PASSWORD
            )
        assert [v.id for v in service.verifications_of_box(
            session, actor=tech, box_code="BOX-1")] == [second.id, first.id]  # fmt: skip


def test_a_tube_cannot_take_the_place_of_a_missing_tube_left_there(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech, (a, b, _) = setup(session, people)
        # a is gone; b was read where a is recorded.
        report = verify(session, tech, {"A1": b.code, "A2": "", "A3": "NO READ"})
        gone = report.lines_of(Finding.MISSING)[0]
        with pytest.raises(Conflict, match=f"A1 is recorded as the place of {a.code}"):
            accepting.accept_verification(
                session, actor=manager, verification_id=report.id, password=PASSWORD,
                missing={gone.id: "leave"},
            )  # fmt: skip
        accepting.accept_verification(
            session, actor=manager, verification_id=report.id, password=PASSWORD,
            missing={gone.id: "lost"},
        )  # fmt: skip
        assert place(session, b)[:2] == (report.box_id, 1)
        assert place(session, a) == (None, None, State.LOST)


def test_a_checked_out_tube_found_back_is_returned_and_a_wrong_temperature_is_only_reported(
    app, people
):
    with app.app_context():
        session = lims_db.session()
        manager, tech, (a, b, _) = setup(session, people)
        perform_action(session, actor=tech, code=a.code, action=Action.CHECK_OUT)
        thaws = a.thaw_count
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
        box(session, tech, code="BOX-20", unit="RH-F20-1")
        (dna,) = tubes(session, tech, 1, material="dna")
        storage.place_item(session, actor=tech, item_scan=dna.code, box_scan="BOX-20")
        (plasma,) = tubes(session, tech, 1)
        report = verify(session, tech, {"A1": dna.code, "A2": plasma.code}, box_code="BOX-20")
        assert findings(report) == {("matched", "A1"): dna.code, ("unexpected", "A2"): plasma.code}
        accepting.accept_verification(
            session, actor=manager, verification_id=report.id, password=PASSWORD
        )
        assert place(session, plasma) == (None, None, State.REGISTERED)
        (line,) = report.lines_of(Finding.UNEXPECTED)
        assert line.resolution.startswith("not recorded here: RH-F20-1 is the wrong temperature")

        # BOX-1: the checked-out tube stands in its place again (and b is missing).
        report = verify(session, tech, {"A1": a.code, "A3": "NO READ"})
        (back,) = report.lines_of(Finding.UNEXPECTED)
        assert (back.item_id, back.recorded_state, back.recorded_position) == (
            a.id,
            "checked_out",
            1,
        )
        (gone,) = report.lines_of(Finding.MISSING)
        accepting.accept_verification(
            session, actor=manager, verification_id=report.id, password=PASSWORD,
            missing={gone.id: "leave"},
        )  # fmt: skip
        assert place(session, a) == (report.box_id, 1, State.STORED)
        assert a.thaw_count == thaws + 1 and a.checked_out_at is None
        assert events(session, a, Action.RETURN_TO_STORAGE)[-1].reason.startswith("rack scan")
        assert place(session, b) == (report.box_id, 2, State.STORED)
        assert gone.resolution == "left as it is"


def test_two_acceptances_at_once_relocate_once(app, people, postgresql_only):  # noqa: F811
    with app.app_context():
        session = lims_db.session()
        _, tech, (a, b, c) = setup(session, people)
        report_id = verify(session, tech, {"A1": b.code, "A2": a.code, "A3": c.code}).id
        swapped = sorted([a.id, b.id])

    def accept(job_session, who):
        return accepting.accept_verification(
            job_session, actor=who, verification_id=report_id, password=PASSWORD
        ).status

    outcomes = at_once(app, (people["manager"], accept), (people["manager"], accept))
    assert VerificationStatus.ACCEPTED in outcomes, outcomes
    (refusal,) = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert isinstance(refusal, Conflict) and "accepted already" in refusal.message
    with app.app_context():
        session = lims_db.session()
        moved = session.scalars(
            select(CustodyEvent).where(CustodyEvent.action == "move").order_by(CustodyEvent.id)
        )
        assert sorted(event.item_id for event in moved) == swapped
