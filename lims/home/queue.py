"""What waits for a technician or a manager at their site: the home page's work queue.

Read-only, and built from the same services the areas' own pages use, so the counts here and
the lists behind the links cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import Role, User
from lims.custody.domain import TERMINAL_STATES, Kind, State
from lims.custody.models import Hold, Item
from lims.followup import services as followup
from lims.manufacturing.overview import LotStatus, lots_at
from lims.requests.services import open_requests_count
from lims.shipments.models import Shipment, ShipmentState
from lims.shipments.services import shipments_of_site


@dataclass
class WorkQueue:
    incoming: list[Shipment] = field(default_factory=list)
    packing: list[Shipment] = field(default_factory=list)
    on_hold: list[tuple[Item, Hold]] = field(default_factory=list)
    #: Thawed bags at the site: each waits for its bedside check and infusion.
    thawed: list[Item] = field(default_factory=list)
    followup_overdue: int = 0
    followup_due: int = 0
    #: Managers: lots whose QC is complete and passed, waiting for release.
    ready_for_release: list = field(default_factory=list)
    #: Aliquot requests waiting at the site: for review (managers) or to pick (technicians).
    requests_waiting: int = 0


def work_queue(session: Session, *, actor: User) -> WorkQueue:
    if actor.role not in (Role.TECHNICIAN, Role.MANAGER):
        return WorkQueue()
    shipments = shipments_of_site(session, actor.site_id)
    held = session.execute(
        select(Item, Hold)
        .join(Hold, Hold.item_id == Item.id)
        .where(Item.site_id == actor.site_id, Hold.cleared_at.is_(None))
        .order_by(Hold.placed_at.desc())
        .limit(50)
    ).all()
    open_holds = [
        (item, hold) for item, hold in held if item.state not in TERMINAL_STATES[item.kind]
    ]
    thawed = session.scalars(
        select(Item).where(
            Item.site_id == actor.site_id,
            Item.kind == Kind.PRODUCT_BAG,
            Item.state == State.THAWED,
        )
    ).all()
    work = followup.worklist(session, actor=actor, today=followup.local_today())
    queue = WorkQueue(
        incoming=[s for s in shipments.incoming if s.state is ShipmentState.IN_TRANSIT],
        packing=[s for s in shipments.outgoing if s.state is ShipmentState.PACKING],
        on_hold=open_holds,
        thawed=list(thawed),
        followup_overdue=len(work.overdue),
        followup_due=len(work.due),
        requests_waiting=open_requests_count(session, actor),
    )
    if actor.role is Role.MANAGER:
        queue.ready_for_release = lots_at(session, actor=actor).lots.get(LotStatus.READY, [])
    return queue
