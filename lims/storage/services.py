"""Storage use cases: the hierarchy, placing an item by scan, moving items, boxes and units.

Every placement and move is a custody step through ``perform_action`` (store, move, return to
storage), so each item's chain of custody records every place it has been. One item per
position is also a unique index: two technicians filling the same position at the same moment
get one success and one clear refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role, site_by_code
from lims.custody.domain import Action, State
from lims.custody.holds import open_holds
from lims.custody.models import Item
from lims.custody.services import Move, commit_or_conflict, find_item, perform_action
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.requests.models import AliquotRequest, LineStatus, RequestLine
from lims.storage.domain import BOX_TYPES, PositionError, TemperatureClass, suitable
from lims.storage.models import Box, Rack, RackKind, StorageUnit, UnitType

BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: Codes printed on storage labels: letters, digits and - _ . (scanners send them as they are).
CODE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,39}")
#: A unit's code is shorter: it heads every location path printed on a label.
UNIT_CODE_LENGTH = StorageUnit.__table__.c.code.type.length
#: States in which an item sits in its box (a move takes it along).
IN_BOX = (State.STORED, State.RESERVED)


def _code(text: str, field: str, longest: int = 40) -> str:
    code = (text or "").strip().upper()
    if not CODE.fullmatch(code) or len(code) > longest:
        raise ValidationError(
            f"A storage code is 1-{longest} letters, digits, '-', '_' or '.'.", field=field
        )
    return code


def _person(actor: User | None) -> User:
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("Storage is handled by a person.")
    return actor


def _manager(actor: User | None) -> User:
    require_role(actor, Role.MANAGER)
    return _person(actor)


def _add_unique(session: Session, actor: User, thing: StorageUnit | Rack | Box) -> None:
    """Add a unit, rack or box under a code no other has; one commit."""
    kind = {StorageUnit: "storage unit", Rack: "rack", Box: "box"}[type(thing)]
    message = f"A {kind} {thing.code} exists already."
    if session.scalar(select(type(thing).id).where(type(thing).code == thing.code)):
        raise Conflict(message, field="code")
    try:
        session.add(thing)
        audit.record_created(session, thing, actor=actor)
        session.commit()
    except IntegrityError:  # created by someone else since the check
        session.rollback()
        raise Conflict(message, field="code") from None


# -- the hierarchy -------------------------------------------------------------------------


def create_unit(
    session: Session,
    *,
    actor: User | None,
    code: str,
    name: str,
    unit_type: UnitType | str,
    temperature_class: TemperatureClass | str,
    site_code: str | None = None,
) -> StorageUnit:
    """A storage unit (tank, freezer, fridge) at the person's site (or a named one).

    Setting up a new freezer is bench work (technicians and managers); changing or retiring
    what exists is a manager's (:mod:`lims.storage.editing`)."""
    actor = _person(actor)
    try:
        kind, temperature = UnitType(unit_type), TemperatureClass(temperature_class)
    except ValueError:
        raise ValidationError(
            f"A unit is one of {', '.join(UnitType)} at one of {', '.join(TemperatureClass)}.",
            field="unit_type",
        ) from None
    if not (name or "").strip():
        raise ValidationError("Give the unit a name.", field="name")
    site = site_by_code(session, site_code) if site_code else actor.site
    unit = StorageUnit(
        site_id=site.id,
        code=_code(code, "code", longest=UNIT_CODE_LENGTH),
        name=name.strip()[:100],
        unit_type=kind,
        temperature_class=temperature,
    )
    _add_unique(session, actor, unit)
    session.refresh(unit)
    return unit


def create_rack(
    session: Session,
    *,
    actor: User | None,
    unit_code: str,
    code: str,
    kind: RackKind | str = RackKind.RACK,
    ordinal: int = 1,
) -> Rack:
    actor = _person(actor)
    unit = unit_by_code(session, unit_code)
    _same_site(actor, unit)
    try:
        kind = RackKind(kind)
    except ValueError:
        raise ValidationError(f"A rack is one of {', '.join(RackKind)}.", field="kind") from None
    rack = Rack(unit_id=unit.id, code=_code(code, "code"), kind=kind, ordinal=_ordinal(ordinal))
    _add_unique(session, actor, rack)
    session.refresh(rack)
    return rack


def create_box(
    session: Session,
    *,
    actor: User | None,
    code: str,
    unit_code: str,
    rack_code: str | None = None,
    box_type: str | None = None,
    capacity: int | None = None,
    label: str = "",
    ordinal: int = 1,
) -> Box:
    """A box with a grid (``box_type``) or a container with a ``capacity`` and no positions."""
    actor = _person(actor)
    unit = unit_by_code(session, unit_code)
    _same_site(actor, unit)
    if not unit.active:
        raise Conflict(f"{unit.code} is out of use; it takes nothing new.", field="unit")
    rack = None
    if rack_code:
        rack = rack_by_code(session, rack_code)
        if rack.unit_id != unit.id:
            raise ValidationError(f"Rack {rack.code} is not in {unit.code}.", field="rack")
    if (box_type is None) == (capacity is None):
        raise ValidationError(
            "A box has a type with positions (9x9, 10x10, 8x12, cassettes) or, for a canister "
            "or bin, a capacity: one of the two.",
            field="box_type",
        )
    if box_type is not None and box_type not in BOX_TYPES:
        raise ValidationError(f"A box type is one of {', '.join(BOX_TYPES)}.", field="box_type")
    if capacity is not None and (
        isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 1000
    ):
        raise ValidationError("A capacity is a whole number from 1 to 1000.", field="capacity")
    box = Box(
        code=_code(code, "code"),
        label=(label or "").strip()[:100],
        box_type=box_type,
        capacity=capacity,
        unit_id=unit.id,
        rack_id=rack.id if rack else None,
        ordinal=_ordinal(ordinal),
    )
    _add_unique(session, actor, box)
    session.refresh(box)
    return box


def _ordinal(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 999:
        raise ValidationError("A place in the unit is a number from 1 to 999.", field="ordinal")
    return value


def _same_site(actor: User, unit: StorageUnit) -> None:
    if unit.site_id != actor.site_id:
        raise Forbidden(f"{unit.code} is at {unit.site.code}; you work at {actor.site.code}.")


def unit_by_code(session: Session, code: str, *, for_update: bool = False) -> StorageUnit:
    query = select(StorageUnit).where(StorageUnit.code == (code or "").strip().upper())
    if for_update:
        query = query.with_for_update(of=StorageUnit)
    unit = session.scalar(query)
    if unit is None:
        raise NotFound(f"No storage unit {code}.", field="unit")
    return unit


def rack_by_code(session: Session, code: str) -> Rack:
    rack = session.scalar(select(Rack).where(Rack.code == (code or "").strip().upper()))
    if rack is None:
        raise NotFound(f"No rack {code}.", field="rack")
    return rack


def box_by_code(session: Session, code: str, *, for_update: bool = False) -> Box:
    query = select(Box).where(Box.code == (code or "").strip().upper())
    if for_update:
        query = query.with_for_update(of=Box).execution_options(populate_existing=True)
    box = session.scalar(query)
    if box is None:
        raise NotFound(f"No box {code}.", field="box")
    return box


# -- positions -----------------------------------------------------------------------------


def contents(session: Session, box: Box) -> list[Item]:
    """The items that hold a place in the box, in position order."""
    return list(
        session.scalars(select(Item).where(Item.box_id == box.id).order_by(Item.position, Item.id))
    )


def next_free_position(session: Session, box: Box, *, after: int = 0) -> int | None:
    """The first free position after ``after`` (row by row), or None when the box is full."""
    if box.geometry is None:
        return None
    taken = set(
        session.scalars(
            select(Item.position).where(Item.box_id == box.id, Item.position.is_not(None))
        )
    )
    for index in range(max(after, 0) + 1, box.size + 1):
        if index not in taken:
            return index
    return None


def position_name(box: Box, position: int | None) -> str:
    return box.geometry.name(position) if box.geometry and position else ""


def location_of(box: Box, position: int | None) -> str:
    name = position_name(box, position)
    return f"{box.path} / {name}" if name else box.path


# -- placing and moving ----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    item: Item
    box: Box
    position: int | None
    action: Action

    @property
    def position_name(self) -> str:
        return position_name(self.box, self.position)


def _step_into_storage(item: Item) -> Action:
    if item.state in IN_BOX:
        return Action.MOVE
    if item.state is State.CHECKED_OUT:
        return Action.RETURN_TO_STORAGE
    if item.state is State.PICKED:
        return Action.PUT_BACK
    return Action.STORE


def refuse_picked_for_a_request(session: Session, item: Item) -> None:
    """A picked tube goes back into a box only once no request wants it any more."""
    wanting = session.scalar(
        select(AliquotRequest.code)
        .join(RequestLine, RequestLine.request_id == AliquotRequest.id)
        .where(RequestLine.item_id == item.id, RequestLine.status == LineStatus.PICKED)
    )
    if wanting is not None:
        raise Conflict(
            f"{item.code} is picked for request {wanting}; it travels with that request."
        )


def check_place(session: Session, actor: User, item: Item, box: Box) -> None:
    if not (box.active and box.unit.active):
        raise Conflict(f"{box.code} is out of use ({box.unit.code} takes nothing new).")
    if box.unit.site_id != actor.site_id:
        raise Forbidden(
            f"Box {box.code} is at {box.unit.site.code}; you work at {actor.site.code}."
        )
    if item.site_id != box.unit.site_id:
        raise Conflict(
            f"{item.code} is at {item.site.code}, not at {box.unit.site.code} where {box.code} "
            "stands: receive it there first."
        )
    reason = suitable(item.material_type.value, box.unit.temperature_class)
    if reason:
        raise Conflict(f"{box.unit.code} is the wrong temperature for {item.code}: {reason}")
    if not storage_settings()["store_held_material"]:
        holds = open_holds(session, item.id)
        if holds:
            raise Conflict(f"{item.code} is on hold ({holds[0].reason.label}); it is not stored.")


def place_item(
    session: Session,
    *,
    actor: User | None,
    item_scan: str,
    box_scan: str,
    position: str | None = None,
    manual: bool = True,
    after: int = 0,
) -> Placement:
    """Put the scanned item into the scanned box: at the position given (``A1``, ``A01``, ``12``)
    or the next free one (after ``after`` while a box is filled tube by tube). Refuses an
    occupied position, a full box, the wrong temperature, a box at another site. The step is
    store, move or return to storage, as the item's state says."""
    actor = _person(actor)
    item = find_item(session, item_scan, for_update=True, manual=manual)
    box = box_by_code(session, box_scan, for_update=True)
    check_place(session, actor, item, box)
    index: int | None = None
    if box.geometry is not None:
        if not position and item.box_id == box.id and item.state is State.CHECKED_OUT:
            position = str(item.position)  # back where it came from: its place was kept
        if position:
            try:
                index = box.geometry.index(position)
            except PositionError as exc:
                raise ValidationError(exc.message, field="position") from None
            holder = session.scalar(
                select(Item).where(Item.box_id == box.id, Item.position == index)
            )
            if holder is not None and holder.id != item.id:
                raise Conflict(
                    f"{box.code} {box.geometry.name(index)} holds {holder.code} already.",
                    field="position",
                )
        elif item.state in IN_BOX and item.box_id == box.id:
            # A second scan of a tube that is in this box is a slip or a double read; moving
            # it within the box takes a position.
            raise Conflict(f"{item.code} is in {location_of(box, item.position)} already.")
        else:
            index = next_free_position(session, box, after=after)
            if index is None and after:
                index = next_free_position(session, box)  # wrap round to the first gap
            if index is None:
                raise Conflict(f"{box.code} is full ({box.size} positions).", field="box")
    else:
        count = session.scalar(
            select(func.count()).select_from(Item).where(Item.box_id == box.id, Item.id != item.id)
        )
        if count >= box.size:
            raise Conflict(f"{box.code} is full ({box.size} places).", field="box")
    if item.state in IN_BOX and item.box_id == box.id and item.position == index:
        raise Conflict(f"{item.code} is in {location_of(box, index)} already.")
    step = _step_into_storage(item)
    if step is Action.PUT_BACK:
        refuse_picked_for_a_request(session, item)
    reason = None
    if step is Action.RETURN_TO_STORAGE and item.checked_out_at is not None:
        minutes = int((utcnow() - item.checked_out_at).total_seconds() // 60)
        reason = f"out of storage {minutes} min"
    try:
        perform_action(
            session,
            actor=actor,
            code=item.code,
            action=step,
            reason=reason,
            move=Move(location=location_of(box, index), box_id=box.id, position=index),
            internal=step in {Action.MOVE, Action.PUT_BACK},
            commit=False,
        )
        commit_or_conflict(session)
    except IntegrityError:  # the unique index on (box, position): another placement won
        session.rollback()
        raise Conflict(
            f"{location_of(box, index)} was filled by someone else at the same moment; scan again.",
            field="position",
        ) from None
    return Placement(item, box, index, step)


def store_by_scan(
    session: Session, *, actor: User, item: Item, location: str, position: str | None
) -> Placement | None:
    """The bench's store and return steps: a scanned box label places the item in that box
    (at the position given, or its kept one, or the next free one). Free text is taken only
    where the site has set up no storage units yet (None: the caller records the text)."""
    scanned = (location or "").strip().upper()
    if session.scalar(select(Box.id).where(Box.code == scanned)):
        return place_item(
            session,
            actor=actor,
            item_scan=item.code,
            box_scan=scanned,
            position=position,
            manual=False,
        )
    has_storage = session.scalar(
        select(StorageUnit.id).where(StorageUnit.site_id == actor.site_id).limit(1)
    )
    if has_storage:
        raise ValidationError(
            f"{location.strip()[:40]} is not a box label: scan the box it goes in.",
            field="location",
        )
    return None


def storage_settings() -> dict:
    return current_app.config["LIMS"]["storage"]


def move_box(
    session: Session,
    *,
    actor: User | None,
    box_scan: str,
    unit_code: str,
    rack_code: str | None = None,
    reason: str | None = None,
) -> list[Item]:
    """Move a box with everything in it: one custody event per item, one transaction."""
    actor = _person(actor)
    box = box_by_code(session, box_scan, for_update=True)
    _same_site(actor, box.unit)  # a box changes site only in a shipment
    if not box.active:
        raise Conflict(f"{box.code} is out of use.")
    unit = unit_by_code(session, unit_code)
    _same_site(actor, unit)
    if not unit.active:
        raise Conflict(f"{unit.code} is out of use; it takes nothing new.")
    rack = rack_by_code(session, rack_code) if rack_code else None
    if rack is not None and rack.unit_id != unit.id:
        raise ValidationError(f"Rack {rack.code} is not in {unit.code}.", field="rack")
    refuse_unsuitable(session, [box], unit)
    # The columns, not the relationships: the audit rows read the columns' history.
    box.unit_id, box.rack_id = unit.id, rack.id if rack else None
    audit.record_changes(session, box, actor=actor, action="move", reason=reason)
    moved = move_contents(session, actor, [box], reason or f"box {box.code} moved")
    commit_or_conflict(session)
    return moved


def items_in(session: Session, boxes: list[Box]) -> list[Item]:
    """Everything that holds a place in these boxes, box by box in position order."""
    if not boxes:
        return []
    order = {box.id: n for n, box in enumerate(boxes)}
    found = session.scalars(
        select(Item).where(Item.box_id.in_(list(order))).order_by(Item.position, Item.id)
    )
    return sorted(found, key=lambda item: order[item.box_id])


def unsuitable(
    session: Session, boxes: list[Box], temperature: TemperatureClass
) -> list[tuple[Item, str]]:
    """The items of these boxes that may not be kept at this temperature, and why."""
    found = []
    for item in items_in(session, boxes):
        why = suitable(item.material_type.value, temperature)
        if why:
            found.append((item, why))
    return found


def refuse_unsuitable(session: Session, boxes: list[Box], unit: StorageUnit) -> None:
    found = unsuitable(session, boxes, unit.temperature_class)
    if found:
        item, why = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise Conflict(
            f"Nothing moved: {unit.code} is the wrong temperature for {item.code}{more}: {why}"
        )


def move_contents(session: Session, actor: User, boxes: list[Box], reason: str) -> list[Item]:
    """After boxes changed place (their columns set and audited): a MOVE event for each item
    in them, without committing. A checked-out tube has no event: its place moves with the box
    and it returns there."""
    session.flush()
    for box in boxes:
        session.expire(box, ["unit", "rack"])  # the new place, for the items' locations
    moved = []
    boxes_by_id = {box.id: box for box in boxes}
    for item in items_in(session, boxes):
        if item.state not in IN_BOX:
            continue
        box = boxes_by_id[item.box_id]
        perform_action(
            session,
            actor=actor,
            code=item.code,
            action=Action.MOVE,
            reason=reason,
            move=Move(
                location=location_of(box, item.position), box_id=box.id, position=item.position
            ),
            internal=True,
            commit=False,
        )
        moved.append(item)
    return moved
