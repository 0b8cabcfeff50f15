"""Verifying a box with a rack scanner: compare the scan with the records, accept the report.

``verify_box`` reads the scanner's file (``rackscan``), compares every position with what the
records hold and stores the findings: matched, missing, unexpected, misplaced, not read,
checked out. A manager's signed decision on a report is :mod:`lims.storage.verification_accept`.
"""

from __future__ import annotations

import hashlib
import unicodedata

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody.domain import State
from lims.custody.models import Item
from lims.custody.services import (
    code_from_scan,
    commit_or_conflict,
)
from lims.db import utcnow
from lims.errors import Conflict, DomainError, Forbidden, NotFound, ValidationError
from lims.storage import rackscan
from lims.storage import services as storage
from lims.storage.domain import Geometry, PositionError
from lims.storage.models import Box
from lims.storage.verification_models import (
    Finding,
    RackVerification,
    RackVerificationLine,
    VerificationStatus,
)

BENCH = (Role.TECHNICIAN, Role.MANAGER)
def _bench_person(actor: User | None, *roles: Role) -> User:
    require_role(actor, *(roles or BENCH))
    if actor is None:
        raise ValidationError("A box is verified by a person.")
    return actor


def _same_site(actor: User, box: Box) -> None:
    if box.unit.site_id != actor.site_id:
        raise Forbidden(
            f"Box {box.code} is at {box.unit.site.code}; you work at {actor.site.code}."
        )


def _tube_code(scanned: str) -> str:
    """The code the bench would read from this scan. A code the LIMS does not recognise (a
    foreign tube, a check character that does not fit) is kept as it is: it is reported as
    unexpected, it does not make the whole file unreadable."""
    try:
        return code_from_scan(scanned)
    except DomainError:
        return "".join(scanned.split()).upper()


# -- verifying ------------------------------------------------------------------------------


def box_to_verify(session: Session, *, actor: User | None, box_code: str) -> Box:
    """The box, if this person may verify it: bench staff of its site, a box with a grid."""
    return _box_and_geometry(session, _bench_person(actor), box_code)[0]


def _box_and_geometry(session: Session, actor: User, box_code: str) -> tuple[Box, Geometry]:
    box = storage.box_by_code(session, box_code)
    _same_site(actor, box)
    geometry = box.geometry
    if geometry is None:
        raise Conflict(
            f"{box.code} is a container without positions ({box.size} places): a rack scan "
            "cannot verify it. Count its content instead."
        )
    return box, geometry


def verify_box(
    session: Session, *, actor: User | None, box_code: str, file_bytes: bytes, filename: str
) -> RackVerification:
    """Compare a rack scan of the box with the records and store the report.

    Refuses (storing nothing) a file that cannot be read, the scan of another rack, and
    positions the box does not have. A report without discrepancy is clean at once; one with
    discrepancies waits for a manager, and replaces an earlier report still waiting.
    """
    actor = _bench_person(actor)
    box, geometry = _box_and_geometry(session, actor, box_code)
    scan = rackscan.parse_rack_scan(file_bytes, normalise=_tube_code)
    if scan.rack_id is not None and scan.rack_id != box.code:
        raise ValidationError(
            f"The file is the scan of rack {scan.rack_id}, not of box {box.code}: nothing was "
            f"stored. Scan {box.code} (or verify {scan.rack_id} on its own page).",
            field="file",
        )
    readings: dict[int, rackscan.Reading] = {}
    problems = []
    for reading in scan.readings:
        try:
            readings[geometry.index(reading.position_name)] = reading
        except PositionError as exc:
            problems.append(f"line {reading.line}: {exc.message}")
    if problems:
        raise rackscan.RackScanError(
            f"The scan does not fit box {box.code} ({box.box_type}), nothing was stored: "
            + "; ".join(problems[: rackscan.MAX_LISTED])
            + ("; …" if len(problems) > rackscan.MAX_LISTED else "")
            + ". Was the right rack type chosen on the scanner?",
            problems,
        )
    lines = _compare(session, box, readings)
    clean = not any(line.finding.is_discrepancy for line in lines)
    for earlier in session.scalars(
        select(RackVerification).where(
            RackVerification.box_id == box.id,
            RackVerification.status == VerificationStatus.PENDING,
        )
    ):
        earlier.status = VerificationStatus.SUPERSEDED
        audit.record_changes(session, earlier, actor=actor, action="supersede")
    verification = RackVerification(
        box_id=box.id,
        filename=_printable(filename)[:255] or "rack scan",
        sha256=hashlib.sha256(file_bytes).hexdigest(),
        rack_id=scan.rack_id,
        uploaded_by_id=actor.id,
        uploaded_at=utcnow(),
        status=VerificationStatus.CLEAN if clean else VerificationStatus.PENDING,
        lines=lines,
    )
    session.add(verification)
    audit.record_created(session, verification, actor=actor, reason=summary(verification))
    commit_or_conflict(session)
    return verification


def _compare(
    session: Session, box: Box, readings: dict[int, rackscan.Reading]
) -> list[RackVerificationLine]:
    """One line per tube read or recorded (and per unread position), in position order."""
    recorded = list(session.scalars(select(Item).where(Item.box_id == box.id)))
    by_position = {item.position: item for item in recorded if item.position is not None}
    codes = [reading.code for reading in readings.values() if reading.code]
    by_code = (
        {item.code: item for item in session.scalars(select(Item).where(Item.code.in_(codes)))}
        if codes
        else {}
    )
    lines: list[RackVerificationLine] = []
    seen: set[int] = set()
    for index, reading in sorted(readings.items()):
        if reading.code is None:
            continue
        item = by_code.get(reading.code)
        line = RackVerificationLine(
            position=index, scanned_code=reading.code, file_line=reading.line
        )
        if item is None:
            line.finding = Finding.UNEXPECTED  # unknown to the LIMS
        else:
            _describe_record(line, item, box)
            seen.add(item.id)
            if item.box_id != box.id or item.state is State.CHECKED_OUT:
                line.finding = Finding.UNEXPECTED
            elif item.position == index:
                line.finding = Finding.MATCHED
            else:
                line.finding = Finding.MISPLACED
        lines.append(line)
    for index, reading in sorted(readings.items()):
        if reading.unreadable:
            # The tube recorded here may well be the one standing here: not called missing.
            holder = by_position.get(index)
            holder = holder if holder is not None and holder.id not in seen else None
            line = RackVerificationLine(
                finding=Finding.UNREADABLE, position=index, file_line=reading.line
            )
            if holder is not None:
                _describe_record(line, holder, box)
                seen.add(holder.id)
            lines.append(line)
    for item in sorted(recorded, key=lambda i: (i.position or 0, i.id)):
        if item.id in seen:
            continue
        line = RackVerificationLine(
            finding=Finding.CHECKED_OUT if item.state is State.CHECKED_OUT else Finding.MISSING
        )
        _describe_record(line, item, box)
        lines.append(line)
    return lines


def _describe_record(line: RackVerificationLine, item: Item, box: Box) -> None:
    line.item_id = item.id
    line.item = item
    line.recorded_position = item.position if item.box_id == box.id else None
    line.recorded_location = (item.location or "")[:200] or None
    line.recorded_state = item.state.value


def _printable(filename: str) -> str:
    """The uploaded file's name without control characters (a NUL cannot be stored)."""
    return "".join(char for char in filename or "" if unicodedata.category(char)[0] != "C").strip()


def summary(verification: RackVerification) -> str:
    counts = {finding: len(verification.lines_of(finding)) for finding in Finding}
    found = ", ".join(
        f"{count} {finding.label.lower()}" for finding, count in counts.items() if count
    )
    return f"rack scan {verification.filename}: {found or 'an empty box'}"


# -- reading --------------------------------------------------------------------------------


def get_verification(
    session: Session, *, actor: User | None, verification_id: int
) -> RackVerification:
    actor = _bench_person(actor)
    verification = session.get(RackVerification, verification_id)
    if verification is None:
        raise NotFound("No such rack verification.")
    _same_site(actor, verification.box)
    return verification


def verifications_of_box(
    session: Session, *, actor: User | None, box_code: str, limit: int = 20
) -> list[RackVerification]:
    box = box_to_verify(session, actor=actor, box_code=box_code)
    return list(
        session.scalars(
            select(RackVerification)
            .where(RackVerification.box_id == box.id)
            .order_by(RackVerification.id.desc())
            .limit(limit)
        )
    )
