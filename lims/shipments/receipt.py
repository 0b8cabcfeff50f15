"""Shipments on arrival: scanned, reconciled against what was sent, and received.

Scanning only records what was found; nothing changes custody until the receipt is completed,
and then every scanned item is received in one transaction (custody passes to the receiver).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.auth.services import confirm_second_person
from lims.custody.domain import Action
from lims.custody.models import Item
from lims.custody.services import (
    Move,
    code_from_scan,
    commit_or_conflict,
    perform_action,
    second_person_step,
)
from lims.db import utcnow
from lims.errors import DomainError, Forbidden, ValidationError
from lims.shipments.models import LineStatus, Shipment, ShipmentLine, ShipmentState
from lims.shipments.services import (
    LineOutcome,
    clean_text,
    commit_line,
    get_shipment,
    require_person,
    require_state,
    with_code,
)

#: Where received material is until it is stored.
RECEIVED_LOCATION = "goods-in"
_CODE_CHARACTERS = re.compile(r"[0-9A-Z*]{1,64}")


@dataclass(frozen=True)
class Reconciliation:
    """Sent and scanned, sent and not (yet) scanned, scanned but not sent."""

    received: list[ShipmentLine]
    missing: list[ShipmentLine]
    unexpected: list[ShipmentLine]

    @property
    def expected_count(self) -> int:
        return len(self.received) + len(self.missing)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected


def reconciliation(shipment: Shipment) -> Reconciliation:
    lines = shipment.lines
    return Reconciliation(
        received=[line for line in lines if line.status is LineStatus.RECEIVED],
        missing=[
            line for line in lines if line.status in (LineStatus.EXPECTED, LineStatus.MISSING)
        ],
        unexpected=[line for line in lines if line.status is LineStatus.UNEXPECTED],
    )


def receipt_needs_second_person(session: Session, shipment: Shipment, actor: User) -> bool:
    """Whether completing the receipt will ask for a second person (a product bag arriving
    at its patient's treating site, when the configuration asks for it)."""
    destination = Move(site_code=shipment.to_site.code)
    return any(
        second_person_step(session, line.item, Action.RECEIVE, actor, destination)
        for line in shipment.lines
        if line.item is not None and line.status in (LineStatus.EXPECTED, LineStatus.RECEIVED)
    )


def _at_destination(actor: User, shipment: Shipment, doing: str) -> None:
    if actor.site_id != shipment.to_site_id:
        raise Forbidden(
            f"Shipment {shipment.code} goes to {shipment.to_site.code} ({shipment.to_site.name}): "
            f"only staff there {doing} it. You work at {actor.site.code}."
        )


def scan_on_receipt(
    session: Session,
    *,
    actor: User | None,
    shipment_code: str,
    scan: str,
    manual: bool = True,
) -> LineOutcome:
    """Tick off a bag or tube found in the box, or record it loudly as unexpected.

    Custody does not change here: the receipt is completed (and custody passes) in one step
    with :func:`complete_receipt`, once everything in the box is scanned.
    """
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_destination(actor, shipment, "receive")
    require_state(shipment, ShipmentState.IN_TRANSIT, "scan the arrival of")
    code = code_from_scan(scan, manual=manual)
    if code == shipment.code:
        raise ValidationError(
            "That is the shipment's own label: scan the bags and tubes inside.", field="scan"
        )
    if not _CODE_CHARACTERS.fullmatch(code):
        raise ValidationError(
            "That is not a bag or tube identifier (letters and digits only).", field="scan"
        )
    item = session.scalar(select(Item).where(Item.code == code))
    if item is not None:
        matches = ShipmentLine.item_id == item.id
    else:
        matches = ShipmentLine.scanned_code == code
    line = session.scalar(
        select(ShipmentLine).where(ShipmentLine.shipment_id == shipment.id, matches).limit(1)
    )
    now = utcnow()
    if line is not None and line.status is LineStatus.RECEIVED:
        return LineOutcome(
            "already_scanned", f"{code} was scanned already; nothing was recorded again.", line
        )
    if line is not None and line.status is LineStatus.UNEXPECTED:
        return LineOutcome(
            "unexpected_again",
            f"UNEXPECTED: {code} is not on shipment {shipment.code} (recorded already when "
            "first scanned). Keep it apart.",
            line,
            loud=True,
        )
    if line is not None and line.status is LineStatus.REMOVED:
        # Taken off while packing, yet it travelled: unexpected, on its old line.
        line.status = LineStatus.UNEXPECTED
        line.scanned_at, line.scanned_by_id = now, actor.id
        audit.record_changes(
            session, line, actor=actor, action="scan_on_receipt", reason="taken off, yet sent"
        )
        session.commit()
        return LineOutcome(
            "unexpected",
            f"UNEXPECTED: {code} was taken off shipment {shipment.code} while packing, yet it "
            "is here. Keep it apart and tell the sender.",
            line,
            loud=True,
        )
    if line is not None:
        line.status = LineStatus.RECEIVED
        line.scanned_at, line.scanned_by_id = now, actor.id
        audit.record_changes(session, line, actor=actor, action="scan_on_receipt")
        session.commit()
        done = reconciliation(shipment)
        return LineOutcome(
            "received",
            f"{code} ✓ received ({len(done.received)} of {done.expected_count} scanned).",
            line,
        )
    line = ShipmentLine(
        shipment_id=shipment.id,
        item_id=item.id if item is not None else None,
        scanned_code=code,
        container="",
        status=LineStatus.UNEXPECTED,
        added_at=now,
        added_by_id=actor.id,
        scanned_at=now,
        scanned_by_id=actor.id,
    )
    session.add(line)
    audit.record_created(session, line, actor=actor, reason="scanned on arrival, not sent")
    known = (
        f" It is a {item.kind.label.lower()} of this system, recorded as {item.state.label} at "
        f"{item.site.code}."
        if item is not None
        else " It is not an identifier of this system."
    )
    commit_line(session, f"{code} was scanned at the same moment by someone else.")
    return LineOutcome(
        "unexpected",
        f"UNEXPECTED: {code} was not sent in shipment {shipment.code}.{known} Keep it apart "
        "and tell the sender; it is recorded on the shipment as unexpected.",
        line,
        loud=True,
    )


def complete_receipt(
    session: Session,
    *,
    actor: User | None,
    shipment_code: str,
    note: str = "",
    witness_username: str | None = None,
    witness_password: str | None = None,
) -> Reconciliation:
    """Receive every scanned item (custody passes to the receiver), mark the rest missing."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_destination(actor, shipment, "receive")
    require_state(shipment, ShipmentState.IN_TRANSIT, "complete the receipt of")
    note = clean_text(note, 2000, "note", "note")
    found = reconciliation(shipment)
    if not found.complete and not note:
        raise ValidationError(
            f"{len(found.missing)} missing and {len(found.unexpected)} unexpected: write a "
            "note on what happened before completing the receipt.",
            field="note",
        )
    destination = Move(site_code=shipment.to_site.code, location=RECEIVED_LOCATION)
    witnessed = {
        line.id
        for line in found.received
        if second_person_step(session, line.item, Action.RECEIVE, actor, destination)
    }
    witness = None
    if witnessed:
        # Before any write: a wrong password is counted and committed at once.
        witness = confirm_second_person(
            session, actor=actor, username=witness_username, password=witness_password
        )
    try:
        for line in found.received:
            try:
                perform_action(
                    session,
                    actor=actor,
                    code=line.scanned_code,
                    action=Action.RECEIVE.value,
                    move=destination,
                    witness=witness if line.id in witnessed else None,
                    commit=False,
                )
            except DomainError as exc:
                raise with_code(exc, line.scanned_code, "Nothing was received.") from None
        for line in found.missing:
            line.status = LineStatus.MISSING
            audit.record_changes(
                session, line, actor=actor, action="mark_missing", reason=note or None
            )
        shipment.state = ShipmentState.RECEIVED
        shipment.received_at, shipment.received_by_id = utcnow(), actor.id
        shipment.receipt_note = note or None
        audit.record_changes(
            session, shipment, actor=actor, action="complete_receipt", reason=note or None
        )
        commit_or_conflict(session)
    except DomainError:
        session.rollback()
        raise
    return reconciliation(shipment)
