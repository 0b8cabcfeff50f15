"""The bench: one scan shows the item and what may be done; a scan in scan mode does it.

A keyboard-wedge scanner sometimes reads a code twice. :func:`act_on_scan` takes the same step
by the same person on the same item within ``custody.double_scan_seconds`` as that double read:
it records nothing and says so, instead of a second event or a loud refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import Role, User
from lims.auth.services import Witness, require_role
from lims.bench.domain import DANGEROUS, ELSEWHERE, Need, needs
from lims.custody import domain
from lims.custody.domain import Action, Kind, State
from lims.custody.holds import open_holds
from lims.custody.models import CustodyEvent, Hold, Item
from lims.custody.services import (
    Move,
    custody_settings,
    events_of,
    find_item,
    lineage,
    perform_action,
    visible_to,
)
from lims.db import utcnow
from lims.errors import InvalidTransition, NotFound
from lims.shipments.models import LineStatus, Shipment, ShipmentLine, ShipmentState

BENCH = (Role.TECHNICIAN, Role.MANAGER)


@dataclass(frozen=True)
class Button:
    action: Action
    label: str
    needs: tuple[Need, ...] = ()
    #: Done on another page (a shipment); the view turns it into a link.
    elsewhere: str | None = None
    dangerous: bool = False


@dataclass
class ItemCard:
    item: Item
    lineage: list[Item]
    events: list[CustodyEvent]
    holds: list[Hold]
    buttons: list[Button]
    #: The open shipment the item travels or waits in, if any.
    shipment: Shipment | None = None
    #: A thawed bag waits for its bedside identity check.
    bedside_check_due: bool = False
    children: list[Item] = field(default_factory=list)


def open_shipment_of(session: Session, item: Item) -> Shipment | None:
    return session.scalar(
        select(Shipment)
        .join(ShipmentLine, ShipmentLine.shipment_id == Shipment.id)
        .where(
            ShipmentLine.item_id == item.id,
            ShipmentLine.status == LineStatus.EXPECTED,
            Shipment.state.in_([ShipmentState.PACKING, ShipmentState.IN_TRANSIT]),
        )
        .order_by(Shipment.id.desc())
        .limit(1)
    )


def item_card(session: Session, *, actor: User, scan: str, manual: bool = True) -> ItemCard:
    """What a scan shows: the item, its lineage, last events, holds and the steps offered."""
    require_role(actor, *BENCH)
    item = find_item(session, scan, manual=manual)
    if not visible_to(actor, item):
        raise NotFound(f"No bag or tube with identifier {item.code}.", field="code")
    buttons = [
        Button(
            action=action,
            label=action.label,
            needs=needs(item.kind, action),
            elsewhere=ELSEWHERE.get(action),
            dangerous=action in DANGEROUS,
        )
        for action in domain.available_actions(item.kind, item.state, actor.role)
    ]
    events = events_of(session, item)
    return ItemCard(
        item=item,
        lineage=lineage(item)[1:],
        events=events[-6:][::-1],
        holds=open_holds(session, item.id),
        buttons=buttons,
        shipment=open_shipment_of(session, item),
        bedside_check_due=item.kind is Kind.PRODUCT_BAG and item.state is State.THAWED,
        children=list(item.children),
    )


@dataclass(frozen=True)
class ScanOutcome:
    item_code: str
    action: Action
    event: CustodyEvent | None
    #: The scanner read the code twice: nothing was recorded the second time.
    duplicate: bool = False
    seconds_since: float = 0.0


def _double_read(
    session: Session, actor: User, code: str, action: Action
) -> tuple[CustodyEvent, float] | None:
    window = timedelta(seconds=custody_settings()["double_scan_seconds"])
    last = session.scalar(
        select(CustodyEvent)
        .join(Item, Item.id == CustodyEvent.item_id)
        .where(Item.code == code)
        .order_by(CustodyEvent.id.desc())
        .limit(1)
    )
    if last is None or last.user_id != actor.id or last.action != action.value:
        return None
    age = utcnow() - last.at
    return (last, age.total_seconds()) if age <= window else None


def act_on_scan(
    session: Session,
    *,
    actor: User,
    scan: str,
    action: Action | str,
    manual: bool = True,
    reason: str | None = None,
    move: Move | None = None,
    password: str | None = None,
    witness: Witness | None = None,
) -> ScanOutcome:
    """Do one step on the scanned item, unless this is the scanner reading the code twice."""
    require_role(actor, *BENCH)
    try:
        step = Action(action)
    except ValueError:
        raise InvalidTransition(f"'{action}' is not a custody step.") from None
    item = find_item(session, scan, manual=manual)
    code = item.code
    repeat = _double_read(session, actor, code, step)
    if repeat is not None:
        return ScanOutcome(code, step, repeat[0], duplicate=True, seconds_since=repeat[1])
    try:
        event = perform_action(
            session,
            actor=actor,
            code=code,
            action=step,
            reason=reason,
            move=move,
            password=password,
            witness=witness,
        )
    except InvalidTransition:
        # Two reads racing each other: the first one won; the second is the double read.
        session.rollback()
        repeat = _double_read(session, actor, code, step)
        if repeat is None:
            raise
        return ScanOutcome(code, step, repeat[0], duplicate=True, seconds_since=repeat[1])
    return ScanOutcome(code, step, event)
