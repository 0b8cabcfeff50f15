"""Moving many things at once, and taking back a placement made by mistake.

A rack carried to another unit and the evacuation of a failed freezer move every item in them
with its own custody event, all in one transaction: either the whole content is in its new
place on record, or nothing moved. Undo takes back the last placement of a tube while a box is
being filled; both steps stay in the tube's chain of custody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.audit.models import AuditEntry
from lims.auth.models import User
from lims.custody.domain import Action, Kind, State
from lims.custody.holds import hold_items
from lims.custody.models import CustodyEvent, HoldReason, Item
from lims.custody.services import Move, commit_or_conflict, find_item, perform_action
from lims.db import utcnow
from lims.errors import Conflict, ValidationError
from lims.storage.models import Box, Rack, StorageUnit
from lims.storage.services import (
    _person,
    _same_site,
    box_by_code,
    location_of,
    move_contents,
    rack_by_code,
    refuse_unsuitable,
    unit_by_code,
    unsuitable,
)

#: How long after a placement its undo is offered: a correction at the bench, not history.
UNDO_WINDOW = timedelta(minutes=30)


def _reason(text: str | None, what: str) -> str:
    reason = (text or "").strip()
    if not reason:
        raise ValidationError(f"Give the reason for {what}.", field="reason")
    return reason[:500]


def _target(session: Session, actor: User, unit_code: str) -> StorageUnit:
    unit = unit_by_code(session, unit_code, for_update=True)
    _same_site(actor, unit)
    if not unit.active:
        raise Conflict(f"{unit.code} is out of use; it takes nothing new.", field="unit")
    return unit


def move_rack(
    session: Session, *, actor: User | None, rack_code: str, unit_code: str, reason: str | None
) -> list[Item]:
    """Carry a rack (tower, shelf) with all its boxes into another unit of the same site."""
    actor = _person(actor)
    rack = rack_by_code(session, rack_code)
    _same_site(actor, rack.unit)
    unit = _target(session, actor, unit_code)
    if rack.unit_id == unit.id:
        raise Conflict(f"{rack.code} is in {unit.code} already.", field="unit")
    reason = _reason(reason, f"moving {rack.code}")
    boxes = list(session.scalars(select(Box).where(Box.rack_id == rack.id).order_by(Box.ordinal)))
    refuse_unsuitable(session, boxes, unit)
    rack.unit_id = unit.id
    audit.record_changes(session, rack, actor=actor, action="move", reason=reason)
    for box in boxes:
        box.unit_id = unit.id
        audit.record_changes(session, box, actor=actor, action="move", reason=reason)
    moved = move_contents(session, actor, boxes, f"rack {rack.code} moved: {reason}")
    commit_or_conflict(session)
    return moved


@dataclass(frozen=True)
class Evacuation:
    source: StorageUnit
    target: StorageUnit
    racks: int
    boxes: int
    moved: list[Item]
    #: Items now kept warmer than their material allows: put on hold for review.
    held: list[Item]


def evacuate_unit(
    session: Session,
    *,
    actor: User | None,
    unit_code: str,
    to_unit_code: str,
    reason: str | None,
    accept_warmer: bool = False,
) -> Evacuation:
    """Empty a failed unit into another one: every rack and box goes along with its content,
    and the failed unit is taken out of use. In an emergency the only cold place left may be
    warmer than some material needs; that is refused unless ``accept_warmer`` says the person
    knows, and then those items go on hold (temperature excursion) for a manager's review."""
    actor = _person(actor)
    source = unit_by_code(session, unit_code, for_update=True)
    _same_site(actor, source)
    target = _target(session, actor, to_unit_code)
    if target.id == source.id:
        raise ValidationError("Evacuate into another unit.", field="to_unit")
    reason = _reason(reason, f"evacuating {source.code}")
    racks = list(session.scalars(select(Rack).where(Rack.unit_id == source.id)))
    # Locked before the temperature check: a tube placed meanwhile waits, then is checked too.
    boxes = list(
        session.scalars(
            select(Box)
            .where(Box.unit_id == source.id)
            .order_by(Box.rack_id, Box.id)
            .with_for_update(of=Box)
        )
    )
    warm = unsuitable(session, boxes, target.temperature_class)
    if warm and not accept_warmer:
        refuse_unsuitable(session, boxes, target)
    for rack in racks:
        rack.unit_id = target.id
        audit.record_changes(session, rack, actor=actor, action="evacuate", reason=reason)
    for box in boxes:
        box.unit_id = target.id
        audit.record_changes(session, box, actor=actor, action="evacuate", reason=reason)
    source.active = False
    audit.record_changes(session, source, actor=actor, action="evacuate", reason=reason)
    moved = move_contents(session, actor, boxes, f"evacuated from {source.code}: {reason}")
    held = [item for item, _ in warm]
    if held:
        hold_items(
            session,
            actor=actor,
            items=held,
            reason=HoldReason.TEMPERATURE_EXCURSION,
            detail=(
                f"evacuated from {source.code} into {target.code} "
                f"({target.temperature_class.label})"
            ),
        )
    commit_or_conflict(session)
    return Evacuation(source, target, len(racks), len(boxes), moved, held)


# -- undo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Undone:
    item: Item
    #: Where the tube is now: its former box and position, or nothing (registered again).
    location: str


def _last_event(session: Session, item: Item) -> CustodyEvent | None:
    return session.scalar(
        select(CustodyEvent)
        .where(CustodyEvent.item_id == item.id)
        .order_by(CustodyEvent.id.desc())
        .limit(1)
    )


def _place_before_move(session: Session, item: Item) -> tuple[int | None, int | None]:
    """The box and position the item had before its last move, read from that move's audit
    rows: the newest rows of the item, up to the first field seen twice (each step writes a
    field once, and a move always changes ``stored_at``)."""
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == "item", AuditEntry.entity_id == str(item.id))
        .order_by(AuditEntry.seq.desc())
        .limit(12)
    )
    before: dict[str, str | None] = {}
    for row in rows:
        if row.action != Action.MOVE.value or row.field in before:
            break
        before[row.field] = row.old_value
    box_id = before.get("box_id", str(item.box_id))
    position = before.get("position", item.position)
    return (int(box_id) if box_id else None, int(position) if position else None)


def undoable(event: CustodyEvent, actor: User) -> bool:
    """Whether ``event`` is a placement by scan that ``actor`` may still take back: a store or
    a move written by ``place_item`` (no reason; box, rack and evacuation moves, imports and
    rack-scan relocations all carry one), by this person, within the window."""
    return (
        event.action in (Action.STORE.value, Action.MOVE.value)
        and event.reason is None
        and event.user_id == actor.id
        and utcnow() - event.at <= UNDO_WINDOW
    )


def undo_placement(
    session: Session, *, actor: User | None, item_scan: str, event_id: int
) -> Undone:
    """Take back the placement ``event_id`` of the scanned tube: allowed to the person who
    made it, soon after, when nothing has happened to the tube since."""
    actor = _person(actor)
    item = find_item(session, item_scan, for_update=True)
    last = _last_event(session, item)
    if last is None or last.id != event_id:
        raise Conflict(f"{item.code} has had another step since; move it by scanning instead.")
    if last.user_id != actor.id or utcnow() - last.at > UNDO_WINDOW:
        raise Conflict(
            f"Only the person who placed {item.code} can undo it, within "
            f"{int(UNDO_WINDOW.total_seconds() // 60)} minutes; move it by scanning instead."
        )
    if not undoable(last, actor):
        raise Conflict(
            f"The last step of {item.code} ({last.action}) was not a placement by scan; "
            "move it by scanning instead."
        )
    reason = "placement undone at the bench"
    if last.action == Action.STORE.value and item.kind is Kind.ALIQUOT:
        perform_action(
            session,
            actor=actor,
            code=item.code,
            action=Action.UNDO_STORE,
            reason=reason,
            move=Move(location=""),
            internal=True,
        )
        return Undone(item, "")
    if last.action == Action.MOVE.value and item.state in (State.STORED, State.RESERVED):
        box_id, position = _place_before_move(session, item)
        box = session.get(Box, box_id) if box_id else None
        if box is None:
            raise Conflict(f"Where {item.code} was before is not on record; move it by scanning.")
        box = box_by_code(session, box.code, for_update=True)
        if box.geometry is not None and position is None:
            raise Conflict(f"Where in {box.code} {item.code} was is not on record; move it.")
        holder = session.scalar(
            select(Item).where(Item.box_id == box.id, Item.position == position)
        )
        if position is not None and holder is not None and holder.id != item.id:
            raise Conflict(f"{location_of(box, position)} holds {holder.code} now.")
        perform_action(
            session,
            actor=actor,
            code=item.code,
            action=Action.MOVE,
            reason=reason,
            move=Move(location=location_of(box, position), box_id=box.id, position=position),
            internal=True,
        )
        return Undone(item, location_of(box, position))
    raise Conflict(f"The last step of {item.code} ({last.action}) cannot be undone here.")
