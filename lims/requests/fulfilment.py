"""Fulfilment of an approved request: the pick list, picking by scan, short picks, hand-over
or shipment, and the receipt that distributes the tubes and closes the request."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.custody.domain import Action
from lims.custody.models import Item
from lims.custody.services import Move, find_item, perform_action, perform_many
from lims.db import utcnow
from lims.errors import Conflict, ValidationError
from lims.requests.domain import TO_PICK, TRAVELLING
from lims.requests.models import (
    AliquotRequest,
    Delivery,
    LineStatus,
    RequestLine,
    RequestState,
    ShortKind,
)
from lims.requests.notify import managers_of
from lims.requests.services import (
    after_lines_change,
    check_step,
    get_request,
    lock_items,
    mail_after_commit,
    record_lines,
    require_own,
    require_site,
    set_state,
    tell,
)
from lims.shipments.models import Conditions

R = RequestState


# -- picking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PickEntry:
    line: RequestLine
    site: str
    unit: str
    rack: str
    box: str
    position: str


def pick_list(session: Session, request: AliquotRequest) -> list[PickEntry]:
    """The lines still to pick, by site, storage unit, rack, box and position."""
    from lims.storage.models import Box

    entries = []
    for line in request.lines:
        if line.status not in TO_PICK:
            continue
        item = line.item
        box = session.get(Box, item.box_id) if item.box_id else None
        entries.append(
            PickEntry(
                line=line,
                site=item.site.code,
                unit=box.unit.code if box else "",
                rack=box.rack.code if box and box.rack else "",
                box=box.code if box else "",
                position=box.geometry.name(item.position)
                if box and box.geometry and item.position is not None
                else "",
            )
        )

    def order(entry: PickEntry) -> tuple:
        item = entry.line.item
        return (entry.site, entry.unit, entry.rack, entry.box, item.position or 0, item.code)

    return sorted(entries, key=order)


def _line_for_scan(
    session: Session, request: AliquotRequest, scan: str
) -> tuple[Item, RequestLine | None]:
    item = find_item(session, scan, for_update=True)
    return item, next((x for x in request.lines if x.item_id == item.id), None)


def pick(session: Session, *, actor: User | None, code: str, scan: str) -> RequestLine:
    """A tube scanned off the pick list. One that is not on it is refused, loudly."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "pick")
    require_site(actor, request)
    item, line = _line_for_scan(session, request, scan)
    if line is None or line.status in {LineStatus.REQUESTED, LineStatus.NOT_APPROVED}:
        raise Conflict(f"WRONG TUBE: {item.code} is not on the pick list of {request.code}.")
    if line.status is LineStatus.PICKED:
        raise Conflict(f"{item.code} is picked already.")
    if line.status is not LineStatus.APPROVED:
        raise Conflict(f"WRONG TUBE: {item.code} is {line.status.label} on {request.code}.")
    perform_action(
        session,
        actor=actor,
        code=item.code,
        action=Action.PICK,
        reason=f"request {request.code}",
        internal=True,
        commit=False,
    )
    line.status = LineStatus.PICKED
    line.picked_at = utcnow()
    line.picked_by_id = actor.id
    audit.record_changes(session, line, actor=actor, action="pick")
    after_lines_change(session, request, actor)
    session.commit()
    mail_after_commit(session)
    return line


def short_pick(
    session: Session,
    *,
    actor: User | None,
    code: str,
    item_code: str,
    kind: str,
    reason: str,
) -> RequestLine:
    """A tube on the list that cannot be picked: missing (it is recorded lost) or damaged (it is
    discarded). The manager and the researcher are told."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "pick")
    require_site(actor, request)
    try:
        short = ShortKind(str(kind).strip().lower())
    except ValueError:
        raise ValidationError("A short pick is missing or damaged.", field="kind") from None
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say what was found (or not found).", field="reason")
    if len(reason) > 500:
        raise ValidationError("The reason is at most 500 characters.", field="reason")
    item, line = _line_for_scan(session, request, item_code)
    # A picked tube may turn out damaged (or be dropped) before it leaves: short too.
    if line is None or line.status not in {LineStatus.APPROVED, LineStatus.PICKED}:
        raise Conflict(f"{item.code} is not waiting on the pick list of {request.code}.")
    words = f"short pick for {request.code} ({short.value}): {reason}"
    perform_action(
        session,
        actor=actor,
        code=item.code,
        action=Action.LOSE if short is ShortKind.MISSING else Action.DISCARD,
        reason=words,
        internal=True,  # the request's own step: the tube leaves the request with it
        commit=False,
    )
    line.status = LineStatus.SHORT
    line.short_kind = short
    line.reason = reason
    audit.record_changes(session, line, actor=actor, action="short_pick", reason=reason)
    tell(
        session,
        [*managers_of(session, request.site_id), request.researcher],
        kind="short_pick",
        request=request,
        message=f"Request {request.code}: {item.code} could not be picked ({short.value}).",
    )
    after_lines_change(session, request, actor)
    session.commit()
    mail_after_commit(session)
    return line


# -- dispatch and receipt ----------------------------------------------------------------------


def dispatch(
    session: Session,
    *,
    actor: User | None,
    code: str,
    courier: str,
    conditions: str | None = None,
    logger_ref: str = "",
    tracking_ref: str = "",
) -> AliquotRequest:
    """Hand the picked tubes to the recipient (pick-up: ``courier`` names who collects) or to
    the courier (shipment); custody passes to them."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "dispatch")
    require_site(actor, request)
    if any(x.status in TO_PICK for x in request.lines):
        raise Conflict("Pick every tube on the list (or record it short) first.")
    courier = (courier or "").strip()
    if not courier:
        raise ValidationError(
            "Name the courier, or the person who collects the material.", field="courier"
        )
    values = {"courier": courier, "logger_ref": logger_ref, "tracking_ref": tracking_ref}
    for name, text in values.items():
        if len((text or "").strip()) > 100 + 100 * (name == "courier") or "\x00" in (text or ""):
            raise ValidationError(f"The {name.replace('_', ' ')} is too long.", field=name)
    condition = None
    if conditions not in (None, ""):
        try:
            condition = Conditions(str(conditions))
        except ValueError:
            raise ValidationError("Choose the shipping conditions.", field="conditions") from None
    if request.delivery is Delivery.SHIPMENT and condition is None:
        raise ValidationError("Choose the shipping conditions.", field="conditions")
    travelling = [x for x in request.lines if x.status in TRAVELLING]
    lock_items(session, [x.item_id for x in travelling])
    perform_many(
        session,
        actor=actor,
        items=[line.item for line in travelling],
        action=Action.HAND_OVER,
        reason=f"request {request.code}",
        move=Move(
            custodian=courier,
            location=f"{request.delivery.label}: {request.code}"[:200],
            temperature_logger_ref=(logger_ref or "").strip() or None,
        ),
        internal=True,
    )
    for line in travelling:
        line.status = LineStatus.HANDED_OVER
    record_lines(session, travelling, actor=actor, action="hand_over")
    request.courier = courier
    request.conditions = condition
    request.logger_ref = (logger_ref or "").strip()
    request.tracking_ref = (tracking_ref or "").strip()
    request.dispatched_at = utcnow()
    request.dispatched_by_id = actor.id
    shipped = request.delivery is Delivery.SHIPMENT
    set_state(session, request, R.SHIPPED if shipped else R.HANDED_OVER, actor)
    tell(
        session,
        [request.researcher],
        kind="shipped" if shipped else "handed_over",
        request=request,
        message=f"Request {request.code}: {len(travelling)} aliquots "
        + (f"shipped with {courier}." if shipped else f"handed over to {courier}.")
        + " Confirm the receipt in the LIMS when they arrive.",
    )
    session.commit()
    mail_after_commit(session)
    return request


def confirm_receipt(
    session: Session, *, actor: User | None, code: str, note: str = ""
) -> AliquotRequest:
    """The recipient (or the biobank for them) confirms the arrival: the tubes are
    distributed and the request is closed."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "receive")
    if actor.role is Role.RESEARCHER:
        require_own(actor, request)
    else:
        require_site(actor, request)
    note = (note or "").strip()
    if len(note) > 500:
        raise ValidationError("The note is at most 500 characters.", field="note")
    travelling = [x for x in request.lines if x.status is LineStatus.HANDED_OVER]
    lock_items(session, [x.item_id for x in travelling])
    perform_many(
        session,
        actor=actor,
        items=[line.item for line in travelling],
        action=Action.DISTRIBUTE,
        reason=f"request {request.code} received" + (f": {note}" if note else ""),
        move=Move(custodian=request.researcher.full_name),
        internal=True,
    )
    for line in travelling:
        line.status = LineStatus.RECEIVED
    record_lines(session, travelling, actor=actor, action="receive")
    request.received_at = utcnow()
    request.received_by_id = actor.id
    set_state(session, request, R.RECEIVED, actor, note or None)
    request.closed_at = request.received_at
    set_state(session, request, R.CLOSED, actor, "received")
    tell(
        session,
        [request.researcher, *managers_of(session, request.site_id)],
        kind="received",
        request=request,
        message=f"Request {request.code}: {len(travelling)} aliquots received; the request is "
        "closed.",
    )
    session.commit()
    mail_after_commit(session)
    return request
