"""Shipments: packed at the origin and dispatched; the helpers the receipt and the logger share.

Each use case locks the shipment row (``with_for_update``), checks the actor's role and site,
writes its audit rows and commits once. Custody moves only through ``perform_action``: every
item of a shipment is shipped at dispatch and received when the receipt is completed, in one
transaction each, so a shipment is never half dispatched or half received. The receipt is in
:mod:`lims.shipments.receipt`, the temperature logger file in :mod:`lims.shipments.excursions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role, site_by_code
from lims.custody import domain
from lims.custody.domain import Action
from lims.custody.numbering import next_value
from lims.custody.services import (
    REFUSALS,
    Move,
    code_from_scan,
    commit_or_conflict,
    find_item,
    gather_facts,
    perform_action,
)
from lims.db import utcnow
from lims.errors import Conflict, DomainError, Forbidden, NotFound, ValidationError
from lims.shipments.models import Conditions, LineStatus, Shipment, ShipmentLine, ShipmentState

BENCH = (Role.TECHNICIAN, Role.MANAGER)
PREFIX = "SH"
OPEN_STATES = (ShipmentState.PACKING, ShipmentState.IN_TRANSIT)


@dataclass(frozen=True)
class LineOutcome:
    """What one scan did, for the page to show: ``loud`` ones are shown as errors."""

    kind: str  # added, already_added, received, already_scanned, unexpected, unexpected_again
    message: str
    line: ShipmentLine | None = None
    loud: bool = False


@dataclass(frozen=True)
class SiteShipments:
    outgoing: list[Shipment]
    incoming: list[Shipment]
    received: list[Shipment]


# -- finding --------------------------------------------------------------------------------


def normalise_code(code: str) -> str:
    """A shipment code as typed or scanned: case, spaces and hyphens do not matter."""
    return "".join((code or "").split()).upper().replace("-", "")


def get_shipment(session: Session, code: str, *, for_update: bool = False) -> Shipment:
    query = select(Shipment).where(Shipment.code == normalise_code(code))
    if for_update:
        # populate_existing: a copy the session holds must not hide another person's change.
        query = query.with_for_update(of=Shipment).execution_options(populate_existing=True)
    shipment = session.scalar(query)
    if shipment is None:
        raise NotFound(f"No shipment {normalise_code(code) or '(no code)'}.")
    if for_update:
        session.expire(shipment, ["lines"])
    return shipment


def shipments_of_site(session: Session, site_id: int, *, recent: int = 20) -> SiteShipments:
    outgoing = session.scalars(
        select(Shipment)
        .where(Shipment.from_site_id == site_id, Shipment.state.in_(OPEN_STATES))
        .order_by(Shipment.created_at.desc(), Shipment.id.desc())
    )
    incoming = session.scalars(
        select(Shipment)
        .where(Shipment.to_site_id == site_id, Shipment.state == ShipmentState.IN_TRANSIT)
        .order_by(Shipment.dispatched_at.desc(), Shipment.id.desc())
    )
    received = session.scalars(
        select(Shipment)
        .where(
            or_(Shipment.from_site_id == site_id, Shipment.to_site_id == site_id),
            Shipment.state == ShipmentState.RECEIVED,
        )
        .order_by(Shipment.received_at.desc(), Shipment.id.desc())
        .limit(recent)
    )
    return SiteShipments(list(outgoing), list(incoming), list(received))


# -- checks (shared with the receipt and the logger upload) ---------------------------------


def require_person(actor: User | None) -> User:
    """The actor, who must be bench staff signed in as a person."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("Shipments are handled by a person at a site, not the command line.")
    return actor


def _at_origin(actor: User, shipment: Shipment, doing: str) -> None:
    if actor.site_id != shipment.from_site_id:
        raise Forbidden(
            f"Only staff at {shipment.from_site.code} ({shipment.from_site.name}) {doing} "
            f"shipment {shipment.code}; you work at {actor.site.code}."
        )


def require_state(shipment: Shipment, state: ShipmentState, doing: str) -> None:
    if shipment.state is not state:
        raise Conflict(
            f"Shipment {shipment.code} is {shipment.state.label}: you can only {doing} a "
            f"shipment that is {state.label}."
        )


def clean_text(value: str | None, limit: int, field: str, label: str) -> str:
    """Free text as typed, stripped, of at most ``limit`` characters."""
    text = (value or "").strip()
    if len(text) > limit or "\x00" in text:
        raise ValidationError(f"The {label} is at most {limit} characters.", field=field)
    return text


def _conditions(value: Conditions | str) -> Conditions:
    try:
        return Conditions(value)
    except ValueError:
        raise ValidationError(
            "Choose the shipping conditions: " + ", ".join(c.label for c in Conditions) + ".",
            field="conditions",
        ) from None


def commit_line(session: Session, message: str) -> None:
    """Commit a new or changed line; a clash with a concurrent scan is a ``Conflict``."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(message) from None


def with_code(exc: DomainError, code: str, ending: str) -> DomainError:
    """The same refusal, naming the item it is about and what was (not) done."""
    return type(exc)(f"{code}: {exc.message} {ending}", field=exc.field)


# -- packing --------------------------------------------------------------------------------


def create_shipment(
    session: Session,
    *,
    actor: User | None,
    to_site_code: str,
    conditions: Conditions | str,
    courier: str = "",
    tracking_ref: str = "",
    logger_ref: str = "",
) -> Shipment:
    """A new shipment from the actor's site, packing; its code is printed on its label."""
    actor = require_person(actor)
    origin = actor.site
    if not (to_site_code or "").strip():
        raise ValidationError("Choose the site the shipment goes to.", field="to_site")
    destination = site_by_code(session, to_site_code)
    if destination.id == origin.id:
        raise ValidationError(
            f"A shipment goes to another site: you are at {origin.code}.", field="to_site"
        )
    if not destination.active:
        raise ValidationError(
            f"Site {destination.code} is not active; nothing can be sent there.", field="to_site"
        )
    number = next_value(session, f"shipment:{origin.code}")
    if number > 999_999:
        raise Conflict(f"The shipment numbers of {origin.code} are used up.")
    data = f"{PREFIX}{origin.code}{number:06d}"
    shipment = Shipment(
        code=data + identifiers.mod37_2_check_character(data),
        from_site_id=origin.id,
        to_site_id=destination.id,
        state=ShipmentState.PACKING,
        conditions=_conditions(conditions),
        courier=clean_text(courier, 200, "courier", "courier"),
        tracking_ref=clean_text(tracking_ref, 100, "tracking_ref", "tracking reference"),
        logger_ref=clean_text(logger_ref, 100, "logger_ref", "logger reference"),
        created_at=utcnow(),
        created_by_id=actor.id,
    )
    session.add(shipment)
    audit.record_created(session, shipment, actor=actor)
    session.commit()
    return shipment


def add_to_shipment(
    session: Session,
    *,
    actor: User | None,
    shipment_code: str,
    scan: str,
    container: str = "",
    manual: bool = True,
) -> LineOutcome:
    """Pack a bag or tube: it must be at the origin, on no other open shipment, and
    shippable now (released, not on hold: the transition table decides)."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_origin(actor, shipment, "pack")
    require_state(shipment, ShipmentState.PACKING, "add to")
    container = clean_text(container, 100, "container", "container")
    item = find_item(session, scan, for_update=True, manual=manual)
    existing = session.scalar(
        select(ShipmentLine).where(
            ShipmentLine.shipment_id == shipment.id, ShipmentLine.item_id == item.id
        )
    )
    if existing is not None and existing.status is not LineStatus.REMOVED:
        return LineOutcome(
            "already_added",
            f"{item.code} is on this shipment already; nothing changed.",
            existing,
        )
    if item.site_id != shipment.from_site_id:
        raise Conflict(
            f"{item.code} is at {item.site.code}, not at {shipment.from_site.code} where "
            f"shipment {shipment.code} is packed."
        )
    other = session.scalar(
        select(Shipment)
        .join(ShipmentLine, ShipmentLine.shipment_id == Shipment.id)
        .where(
            ShipmentLine.item_id == item.id,
            ShipmentLine.status == LineStatus.EXPECTED,
            Shipment.state.in_(OPEN_STATES),
            Shipment.id != shipment.id,
        )
        .limit(1)
    )
    if other is not None:
        raise Conflict(f"{item.code} is on shipment {other.code} ({other.state.label}) already.")
    decision = domain.check_transition(
        item.kind, item.state, Action.SHIP.value, actor.role, gather_facts(session, item)
    )
    if not decision.allowed:
        refusal = decision.refusals[0]
        raise REFUSALS[refusal.status](f"{item.code} cannot be shipped: {refusal.message}")
    if existing is not None:  # taken off earlier while packing: packed again
        line = existing
        line.status, line.container = LineStatus.EXPECTED, container
        line.added_at, line.added_by_id = utcnow(), actor.id
        audit.record_changes(session, line, actor=actor, action="add_again")
    else:
        line = ShipmentLine(
            shipment_id=shipment.id,
            item_id=item.id,
            scanned_code=item.code,
            container=container,
            status=LineStatus.EXPECTED,
            added_at=utcnow(),
            added_by_id=actor.id,
        )
        session.add(line)
        audit.record_created(session, line, actor=actor)
    commit_line(session, f"{item.code} was added at the same moment by someone else.")
    return LineOutcome("added", f"{item.code} added to shipment {shipment.code}.", line)


def remove_from_shipment(
    session: Session, *, actor: User | None, shipment_code: str, scan: str, manual: bool = False
) -> str:
    """Take a bag or tube off a shipment still being packed: the line stays, marked removed,
    so the record shows it was there. Returns the item code."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_origin(actor, shipment, "pack")
    require_state(shipment, ShipmentState.PACKING, "remove items from")
    code = code_from_scan(scan, manual=manual)
    line = session.scalar(
        select(ShipmentLine).where(
            ShipmentLine.shipment_id == shipment.id,
            ShipmentLine.scanned_code == code,
            ShipmentLine.status != LineStatus.REMOVED,
        )
    )
    if line is None:
        raise NotFound(f"{code} is not on shipment {shipment.code}.", field="scan")
    line.status = LineStatus.REMOVED
    audit.record_changes(
        session,
        line,
        actor=actor,
        action="remove",
        reason=f"{code} taken off shipment {shipment.code} while packing",
    )
    session.commit()
    return code


def cancel_shipment(
    session: Session, *, actor: User | None, shipment_code: str, reason: str | None
) -> Shipment:
    """Call off a shipment still being packed (nothing has left): it is kept, marked
    cancelled with the reason, and its items are free for another shipment. Items never
    change state while packed, so no custody step is undone."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_origin(actor, shipment, "cancel")
    require_state(shipment, ShipmentState.PACKING, "cancel")
    why = clean_text(reason, 2000, "reason", "reason")
    if not why:
        raise ValidationError("Say why the shipment is cancelled.", field="reason")
    shipment.state = ShipmentState.CANCELLED
    audit.record_changes(session, shipment, actor=actor, action="cancel", reason=why)
    session.commit()
    return shipment


def dispatch_shipment(
    session: Session,
    *,
    actor: User | None,
    shipment_code: str,
    courier: str,
    tracking_ref: str = "",
    logger_ref: str = "",
) -> Shipment:
    """Ship every item to the courier, all or nothing: one refusal and nothing leaves."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    _at_origin(actor, shipment, "dispatch")
    require_state(shipment, ShipmentState.PACKING, "dispatch")
    courier = clean_text(courier, 200, "courier", "courier")
    if not courier:
        raise ValidationError("Name the courier who takes the shipment.", field="courier")
    tracking_ref = clean_text(tracking_ref, 100, "tracking_ref", "tracking reference")
    logger_ref = clean_text(logger_ref, 100, "logger_ref", "logger reference")
    lines = list(shipment.lines)
    if not lines:
        raise ValidationError("Add at least one bag or tube before dispatching the shipment.")
    move = Move(
        custodian=courier,
        temperature_logger_ref=logger_ref or None,
        location=f"shipment {shipment.code}",
    )
    try:
        for line in lines:
            try:
                perform_action(
                    session,
                    actor=actor,
                    code=line.scanned_code,
                    action=Action.SHIP.value,
                    move=move,
                    commit=False,
                )
            except DomainError as exc:
                raise with_code(exc, line.scanned_code, "Nothing was dispatched.") from None
        shipment.state = ShipmentState.IN_TRANSIT
        shipment.courier, shipment.tracking_ref = courier, tracking_ref
        shipment.logger_ref = logger_ref
        shipment.dispatched_at, shipment.dispatched_by_id = utcnow(), actor.id
        audit.record_changes(session, shipment, actor=actor, action="dispatch")
        commit_or_conflict(session)
    except DomainError:
        session.rollback()
        raise
    return shipment
