"""What the manufacturing pages read: where a lot stands, its overview and the site's queue.

Nothing here writes. The use cases that change lots (:mod:`lims.manufacturing.services`)
import from here, never the other way round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit.models import ESignature
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody import domain
from lims.custody.domain import Action, Kind, State
from lims.custody.models import CustodyEvent, Hold, Item, ProductLot, QcResult
from lims.custody.services import custody_settings, gather_facts
from lims.errors import NotFound, ValidationError

BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: Apheresis collections at a site that manufacturing may still use.
WAITING_STATES = (State.RECEIVED_FOR_MANUFACTURING, State.STORED, State.IN_MANUFACTURING)
#: Bag states before release: the lot's decision is still open while a bag is in one.
PENDING = frozenset({State.MANUFACTURED, State.QUARANTINE})
#: How many lots already decided the overview lists besides the open ones.
RECENT_DECIDED = 30


class LotStatus(StrEnum):
    IN_PRODUCTION = "in_production"
    AWAITING_QC = "awaiting_qc"
    ON_HOLD = "on_hold"
    READY = "ready"
    RELEASED = "released"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return {
            "in_production": "In production",
            "awaiting_qc": "Quarantine, awaiting QC",
            "on_hold": "QC failed or on hold",
            "ready": "Ready for release",
            "released": "Released",
            "closed": "Closed without release",
        }[self.value]


# -- identifiers as printed -------------------------------------------------------------------


def bag_label(bag: Item) -> str:
    """The bag's DIN as printed, with its check character."""
    return f"{identifiers.eye_readable(bag.code, bag.check_character)} {bag.check_character}"


def bag_name(bag: Item) -> str:
    return f"Bag {bag_label(bag)}"


# -- reading ----------------------------------------------------------------------------------


def get_lot(session: Session, lot_number: str) -> ProductLot:
    number = (lot_number or "").strip().upper()
    lot = session.scalar(select(ProductLot).where(ProductLot.lot_number == number))
    if lot is None:
        raise NotFound(f"No lot {number or '(empty)'}.", field="lot_number")
    return lot


def qc_summary(results: Iterable[QcResult]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Required tests without a result, and tests whose latest result failed.

    The latest result of a test counts, as for the release guard (``gather_facts``).
    """
    latest: dict[str, bool] = {}
    for result in sorted(results, key=lambda r: r.id):
        latest[result.test] = result.passed
    missing = tuple(t for t in custody_settings()["required_qc"] if t not in latest)
    failed = tuple(sorted(t for t, passed in latest.items() if not passed))
    return missing, failed


def lot_status(states: Iterable[State], *, held: bool, missing: bool, failed: bool) -> LotStatus:
    """Where a lot stands, from its bags' states, its open holds and its QC."""
    states = list(states)
    pending = [s for s in states if s in PENDING]
    if not pending:
        decided = [s for s in states if s is not State.DISCARDED]
        return LotStatus.RELEASED if decided else LotStatus.CLOSED
    if failed or held:
        return LotStatus.ON_HOLD
    if State.MANUFACTURED in pending:
        return LotStatus.IN_PRODUCTION
    if missing:
        return LotStatus.AWAITING_QC
    return LotStatus.READY


def release_blockers(session: Session, lot: ProductLot) -> list[str]:
    """Why the lot's bags cannot be released now, bags sharing a reason named together.

    Asks the custody transition table (the guards of the release step), so what this page
    says and what the release refuses cannot disagree.
    """
    reasons: dict[str, list[str]] = defaultdict(list)
    for bag in sorted(lot.bags, key=lambda b: b.id):
        if bag.state is State.MANUFACTURED:
            reasons["Not in quarantine yet: quarantine the lot first."].append(bag_label(bag))
        elif bag.state is State.QUARANTINE:
            facts = gather_facts(session, bag)
            decision = domain.check_transition(
                bag.kind, bag.state, Action.RELEASE, Role.MANAGER, facts
            )
            for refusal in decision.refusals:
                reasons[refusal.message].append(bag_label(bag))
    return [
        f"{'Bag' if len(names) == 1 else 'Bags'} {', '.join(names)}: {reason}"
        for reason, names in reasons.items()
    ]


def _open_holds(session: Session, item_ids: list[int]) -> dict[int, list[Hold]]:
    found: dict[int, list[Hold]] = defaultdict(list)
    if item_ids:
        query = (
            select(Hold)
            .where(Hold.item_id.in_(item_ids), Hold.cleared_at.is_(None))
            .order_by(Hold.id)
        )
        for hold in session.scalars(query):
            found[hold.item_id].append(hold)
    return found


@dataclass(frozen=True)
class BagView:
    bag: Item
    holds: list[Hold]


@dataclass(frozen=True)
class QcRow:
    result: QcResult
    entered_by: str


@dataclass(frozen=True)
class LotOverview:
    """What the lot page shows: facts, bags with holds, QC, review and release records."""

    lot: ProductLot
    status: LotStatus
    sources: list[Item]
    bags: list[BagView]
    qc: list[QcRow]
    missing: tuple[str, ...]
    failed: tuple[str, ...]
    reviews: list[ESignature]
    releases: list[CustodyEvent]
    blockers: list[str]

    @property
    def out_of_spec(self) -> list[QcRow]:
        return [row for row in self.qc if not row.result.passed]

    @property
    def holds(self) -> list[tuple[Item, Hold]]:
        return [(view.bag, hold) for view in self.bags for hold in view.holds]

    @property
    def to_quarantine(self) -> int:
        return sum(view.bag.state is State.MANUFACTURED for view in self.bags)

    @property
    def in_quarantine(self) -> int:
        return sum(view.bag.state is State.QUARANTINE for view in self.bags)


def lot_overview(session: Session, *, actor: User | None, lot_number: str) -> LotOverview:
    require_role(actor, *BENCH)
    lot = get_lot(session, lot_number)
    bags = sorted(lot.bags, key=lambda b: b.id)
    holds = _open_holds(session, [bag.id for bag in bags])
    results = list(
        session.scalars(select(QcResult).where(QcResult.lot_id == lot.id).order_by(QcResult.id))
    )
    user_ids = {r.entered_by_id for r in results if r.entered_by_id is not None}
    names = {
        user.id: user.full_name
        for user in (session.scalars(select(User).where(User.id.in_(user_ids))) if user_ids else [])
    }
    missing, failed = qc_summary(results)
    reviews = list(
        session.scalars(
            select(ESignature)
            .where(
                ESignature.entity == "product_lot",
                ESignature.entity_id == str(lot.id),
                ESignature.meaning == "reviewed",
            )
            .order_by(ESignature.id)
        )
    )
    releases = list(
        session.scalars(
            select(CustodyEvent)
            .where(
                CustodyEvent.item_id.in_([bag.id for bag in bags]),
                CustodyEvent.action == Action.RELEASE.value,
            )
            .order_by(CustodyEvent.id)
        )
    )
    pending = [bag for bag in bags if bag.state in PENDING]
    return LotOverview(
        lot=lot,
        status=lot_status(
            (bag.state for bag in bags),
            held=any(holds.get(bag.id) for bag in pending),
            missing=bool(missing),
            failed=bool(failed),
        ),
        sources=list(lot.sources),
        bags=[BagView(bag, holds.get(bag.id, [])) for bag in bags],
        qc=[QcRow(r, names.get(r.entered_by_id, "command line")) for r in results],
        missing=missing,
        failed=failed,
        reviews=reviews,
        releases=releases,
        blockers=release_blockers(session, lot) if pending else [],
    )


@dataclass(frozen=True)
class LotRow:
    lot: ProductLot
    status: LotStatus
    bag_count: int
    missing: tuple[str, ...]
    failed: tuple[str, ...]


@dataclass(frozen=True)
class ManufacturingQueue:
    """The manufacturing site's lots by status and the collections waiting to be used."""

    lots: dict[LotStatus, list[LotRow]] = field(default_factory=dict)
    waiting: list[Item] = field(default_factory=list)
    held: frozenset[int] = frozenset()


def lots_at(session: Session, *, actor: User | None) -> ManufacturingQueue:
    """Lots made at the actor's site (all open ones, the latest decided ones) and the
    apheresis collections there that manufacturing may still use."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("The manufacturing overview is for a person at a site.")
    open_ids = set(
        session.scalars(
            select(Item.lot_id)
            .join(ProductLot, Item.lot_id == ProductLot.id)
            .where(ProductLot.manufacturing_site_id == actor.site_id, Item.state.in_(PENDING))
            .distinct()
        )
    )
    recent_ids = set(
        session.scalars(
            select(ProductLot.id)
            .where(ProductLot.manufacturing_site_id == actor.site_id)
            .order_by(ProductLot.manufactured_at.desc(), ProductLot.id.desc())
            .limit(RECENT_DECIDED)
        )
    )
    lot_ids = open_ids | recent_ids
    lots = list(
        session.scalars(
            select(ProductLot)
            .where(ProductLot.id.in_(lot_ids))
            .order_by(ProductLot.manufactured_at.desc(), ProductLot.id.desc())
        )
    )
    bags: dict[int, list[Item]] = defaultdict(list)
    results: dict[int, list[QcResult]] = defaultdict(list)
    if lot_ids:
        for bag in session.scalars(select(Item).where(Item.lot_id.in_(lot_ids))):
            bags[bag.lot_id].append(bag)
        for result in session.scalars(select(QcResult).where(QcResult.lot_id.in_(lot_ids))):
            results[result.lot_id].append(result)
    pending_ids = [bag.id for lot_bags in bags.values() for bag in lot_bags if bag.state in PENDING]
    held_bags = _open_holds(session, pending_ids)
    grouped: dict[LotStatus, list[LotRow]] = {status: [] for status in LotStatus}
    for lot in lots:
        missing, failed = qc_summary(results[lot.id])
        status = lot_status(
            (bag.state for bag in bags[lot.id]),
            held=any(bag.id in held_bags for bag in bags[lot.id]),
            missing=bool(missing),
            failed=bool(failed),
        )
        grouped[status].append(LotRow(lot, status, len(bags[lot.id]), missing, failed))
    waiting = list(
        session.scalars(
            select(Item)
            .where(
                Item.kind == Kind.APHERESIS,
                Item.site_id == actor.site_id,
                Item.state.in_(WAITING_STATES),
            )
            .order_by(Item.collected_at, Item.id)
        )
    )
    held = frozenset(_open_holds(session, [item.id for item in waiting]))
    return ManufacturingQueue(lots=grouped, waiting=waiting, held=held)
