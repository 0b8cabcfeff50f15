"""Holds: material that may not be reserved, released, shipped or distributed for now."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody.domain import TERMINAL_STATES
from lims.custody.models import Hold, HoldReason, Item
from lims.db import utcnow
from lims.errors import Conflict, NotFound, ValidationError
from lims.patients.models import Episode


def open_holds(session: Session, item_id: int) -> list[Hold]:
    return list(
        session.scalars(
            select(Hold).where(Hold.item_id == item_id, Hold.cleared_at.is_(None)).order_by(Hold.id)
        )
    )


def _place(
    session: Session, *, actor: User | None, item: Item, reason: HoldReason, detail: str
) -> Hold:
    hold = Hold(item=item, reason=reason, detail=detail, placed_by_id=actor.id if actor else None)
    session.add(hold)
    audit.record_created(session, hold, actor=actor, reason=detail)
    return hold


def hold_items(
    session: Session, *, actor: User | None, items: list[Item], reason: HoldReason, detail: str
) -> list[Hold]:
    """Put every open item on hold (no commit: part of the caller's transaction)."""
    placed = []
    for item in items:
        if item.state in TERMINAL_STATES[item.kind]:
            continue
        if any(h.reason == reason for h in open_holds(session, item.id)):
            continue
        placed.append(_place(session, actor=actor, item=item, reason=reason, detail=detail))
    return placed


def hold_patient_material(
    session: Session, *, actor: User | None, patient_id: int, reason: HoldReason, detail: str
) -> list[Hold]:
    items = session.scalars(
        select(Item)
        .join(Episode, Item.episode_id == Episode.id)
        .where(Episode.patient_id == patient_id)
        .order_by(Item.id)
    ).all()
    return hold_items(session, actor=actor, items=list(items), reason=reason, detail=detail)


def place_hold(
    session: Session, *, actor: User | None, item: Item, reason: HoldReason | str, detail: str
) -> Hold:
    require_role(actor, Role.TECHNICIAN, Role.MANAGER)
    try:
        reason = HoldReason(reason)
    except ValueError:
        raise ValidationError(
            f"A hold reason is one of: {', '.join(HoldReason)}.", field="reason"
        ) from None
    if not detail.strip():
        raise ValidationError("Say why the material is put on hold.", field="detail")
    if item.state in TERMINAL_STATES[item.kind]:
        raise Conflict(f"{item.code} is {item.state.label}; there is nothing to hold.")
    hold = _place(session, actor=actor, item=item, reason=reason, detail=detail.strip())
    session.commit()
    return hold


def clear_hold(session: Session, *, actor: User | None, hold_id: int, reason: str) -> Hold:
    """Only a manager clears a hold, and always says why."""
    require_role(actor, Role.MANAGER)
    # populate_existing: a copy already in the session must not hide a clearing meanwhile.
    hold = session.get(Hold, hold_id, with_for_update=True, populate_existing=True)
    if hold is None:
        raise NotFound("No such hold.")
    if hold.cleared_at is not None:
        raise Conflict("This hold was cleared already.")
    if not reason or not reason.strip():
        raise ValidationError("Give the reason for clearing the hold.", field="reason")
    hold.cleared_at = utcnow()
    hold.cleared_by_id = actor.id if actor else None
    hold.clear_reason = reason.strip()
    audit.record_changes(session, hold, actor=actor, action="clear_hold", reason=reason.strip())
    session.commit()
    return hold
