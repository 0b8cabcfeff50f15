"""Editing the storage hierarchy: a manager renames, re-classes or retires units, racks, boxes.

Codes never change (they are printed on labels and scanned); nothing is deleted. A unit or box
is retired (out of use) instead, and only when that strands nothing: a retired box is empty,
and a unit re-classed to a warmer temperature holds nothing that must be kept colder.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.custody.models import Item
from lims.custody.services import commit_or_conflict
from lims.errors import Conflict, ValidationError
from lims.storage.domain import TemperatureClass
from lims.storage.models import Box, Rack, RackKind, StorageUnit, UnitType
from lims.storage.services import (
    _manager,
    _ordinal,
    _same_site,
    box_by_code,
    rack_by_code,
    unit_by_code,
    unsuitable,
)


def _save(session: Session, actor: User, thing, reason: str | None):
    reason = (reason or "").strip() or None
    changes = audit.pending_changes(thing)
    if not changes:
        return thing
    if reason is None:
        raise ValidationError("Give the reason for the change.", field="reason")
    audit.record_changes(session, thing, actor=actor, action="update", reason=reason)
    commit_or_conflict(session)
    return thing


def update_unit(
    session: Session,
    *,
    actor: User | None,
    code: str,
    name: str,
    unit_type: str,
    temperature_class: str,
    active: bool,
    reason: str | None,
) -> StorageUnit:
    actor = _manager(actor)
    unit = unit_by_code(session, code, for_update=True)
    _same_site(actor, unit)
    try:
        kind, temperature = UnitType(unit_type), TemperatureClass(temperature_class)
    except ValueError:
        raise ValidationError(
            "Choose the unit's type and temperature.", field="unit_type"
        ) from None
    if not (name or "").strip():
        raise ValidationError("Give the unit a name.", field="name")
    if temperature is not unit.temperature_class:
        boxes = list(session.scalars(select(Box).where(Box.unit_id == unit.id)))
        from_the_cold = unsuitable(session, boxes, temperature)
        if from_the_cold:
            item, why = from_the_cold[0]
            raise Conflict(f"{unit.code} holds {item.code}: {why}", field="temperature_class")
    unit.name, unit.unit_type, unit.temperature_class = name.strip()[:100], kind, temperature
    unit.active = bool(active)
    return _save(session, actor, unit, reason)


def update_rack(
    session: Session,
    *,
    actor: User | None,
    code: str,
    kind: str,
    ordinal: int,
    reason: str | None,
) -> Rack:
    actor = _manager(actor)
    rack = rack_by_code(session, code)
    _same_site(actor, rack.unit)
    try:
        rack.kind = RackKind(kind)
    except ValueError:
        raise ValidationError(f"A rack is one of {', '.join(RackKind)}.", field="kind") from None
    rack.ordinal = _ordinal(ordinal)
    return _save(session, actor, rack, reason)


def update_box(
    session: Session,
    *,
    actor: User | None,
    code: str,
    label: str,
    ordinal: int,
    active: bool,
    reason: str | None,
) -> Box:
    actor = _manager(actor)
    box = box_by_code(session, code, for_update=True)
    _same_site(actor, box.unit)
    if box.active and not active:
        held = session.scalar(select(func.count()).select_from(Item).where(Item.box_id == box.id))
        if held:
            raise Conflict(f"{box.code} holds {held} items: move them before retiring it.")
    box.label = (label or "").strip()[:100]
    box.ordinal = _ordinal(ordinal)
    box.active = bool(active)
    return _save(session, actor, box, reason)
