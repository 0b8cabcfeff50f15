"""Registering material: apheresis collections, product lots and bags, QC, samples, aliquots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody import holds
from lims.custody.domain import TERMINAL_STATES, Action, Kind, State
from lims.custody.models import (
    CELL_TYPES,
    TYPES_BY_KIND,
    HoldReason,
    Item,
    MaterialType,
    ProductLot,
    QcResult,
)
from lims.custody.numbering import new_din, new_local_id
from lims.custody.services import (
    add_item,
    check_quantity,
    commit_or_conflict,
    custody_settings,
    find_item,
    perform_action,
    record_event,
    site_for,
)
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.patients.services import get_episode

BENCH = (Role.TECHNICIAN, Role.MANAGER)
QC_TESTS = (
    "viability",
    "sterility",
    "transduction_efficiency",
    "vector_copy_number",
    "cell_dose",
    "endotoxin",
    "mycoplasma",
    "identity",
    "potency",
)
NOT_DERIVABLE = {State.IN_TRANSIT, State.RESERVED, State.PICKED, State.INFUSED}


def _cells(count: int | None, material: MaterialType) -> int | None:
    if count is None:
        return None
    if material not in CELL_TYPES:
        raise ValidationError(f"{material.label} has no cell count.", field="cell_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValidationError("A cell count is a whole number ≥ 0.", field="cell_count")
    return count


def register_collection(
    session: Session,
    *,
    actor: User | None,
    coi: str,
    volume_ml: float | Decimal,
    collected_at: datetime,
    collection_site_code: str | None = None,
    tnc_count: int | None = None,
) -> Item:
    """An apheresis collection of the episode, with a new DIN of the collecting site."""
    require_role(actor, *BENCH)
    episode = get_episode(session, coi)
    site = site_for(session, actor, collection_site_code)
    quantity = check_quantity(volume_ml, "mL")
    code, check = new_din(session, site)
    item = Item(
        code=code,
        check_character=check,
        kind=Kind.APHERESIS,
        material_type=MaterialType.LEUKAPHERESIS,
        episode=episode,
        site=site,
        quantity=quantity,
        unit="mL",
        cell_count=_cells(tnc_count, MaterialType.LEUKAPHERESIS),
        collected_at=collected_at,
    )
    add_item(session, actor=actor, item=item)
    session.commit()
    return item


@dataclass(frozen=True)
class BagSpec:
    volume_ml: float | Decimal
    cell_count: int | None = None


def create_lot(
    session: Session,
    *,
    actor: User | None,
    lot_number: str,
    apheresis_codes: list[str],
    bags: list[BagSpec],
    expires_at: datetime | None = None,
) -> ProductLot:
    """A product lot made from collections of one episode: consumes them, creates its bags."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("A product lot is made by a person at the bench.")
    lot_number = lot_number.strip().upper()
    if not lot_number:
        raise ValidationError("Give the lot number.", field="lot_number")
    if not apheresis_codes:
        raise ValidationError(
            "Name the apheresis collections the lot was made from.", field="apheresis"
        )
    if not 1 <= len(bags) <= 20:
        raise ValidationError("A lot has 1 to 20 bags.", field="bags")
    if session.scalar(select(ProductLot.id).where(ProductLot.lot_number == lot_number)):
        raise Conflict(f"Lot {lot_number} exists already.", field="lot_number")
    sources = [find_item(session, code, for_update=True) for code in apheresis_codes]
    episode = sources[0].episode
    for source in sources:
        if source.kind is not Kind.APHERESIS:
            raise ValidationError(
                f"{source.code} is not an apheresis collection.", field="apheresis"
            )
        if source.episode_id != episode.id:
            # The chain of identity: one lot, one patient.
            raise Conflict(
                f"{source.code} belongs to another Chain of Identity than "
                f"{sources[0].code}; a lot is made for one patient only."
            )
    # Identifiers before audit rows: the counter is locked before the audit chain's head, in
    # the same order as every other registration, so two transactions never deadlock.
    dins = [new_din(session, actor.site) for _ in bags]
    lot = ProductLot(
        lot_number=lot_number,
        episode=episode,
        manufacturing_site_id=actor.site_id,
        sources=sources,
    )
    session.add(lot)
    audit.record_created(session, lot, actor=actor)
    for source in sources:
        perform_action(
            session,
            actor=actor,
            code=source.code,
            action=Action.CONSUME,
            reason=f"manufactured into lot {lot_number}",
            internal=True,
            commit=False,
        )
    for spec, (code, check) in zip(bags, dins, strict=True):
        bag = Item(
            code=code,
            check_character=check,
            kind=Kind.PRODUCT_BAG,
            material_type=MaterialType.CAR_T_PRODUCT,
            episode=episode,
            lot=lot,
            site=actor.site,
            quantity=check_quantity(spec.volume_ml, "mL"),
            unit="mL",
            cell_count=_cells(spec.cell_count, MaterialType.CAR_T_PRODUCT),
            expires_at=expires_at,
        )
        add_item(session, actor=actor, item=bag, reason=f"lot {lot_number}")
    commit_or_conflict(session)
    return lot


def add_qc_result(
    session: Session,
    *,
    actor: User | None,
    lot_number: str,
    test: str,
    value: str,
    passed: bool,
    unit: str = "",
    specification: str = "",
) -> QcResult:
    """Record a QC result; an out-of-specification result puts the lot's bags on hold."""
    require_role(actor, *BENCH)
    lot = session.scalar(select(ProductLot).where(ProductLot.lot_number == lot_number.upper()))
    if lot is None:
        raise NotFound(f"No lot {lot_number}.", field="lot_number")
    test = test.strip().lower()
    if test not in QC_TESTS:
        raise ValidationError(f"The QC test is one of: {', '.join(QC_TESTS)}.", field="test")
    if not str(value).strip():
        raise ValidationError("Give the result.", field="value")
    result = QcResult(
        lot=lot,
        test=test,
        value=str(value).strip(),
        unit=unit.strip(),
        specification=specification.strip(),
        passed=bool(passed),
        entered_by_id=actor.id if actor else None,
    )
    session.add(result)
    audit.record_created(session, result, actor=actor)
    if not result.passed:
        holds.hold_items(
            session,
            actor=actor,
            items=list(lot.bags),
            reason=HoldReason.QC_OUT_OF_SPECIFICATION,
            detail=f"{test} = {result.value} {result.unit}".strip(),
        )
    session.commit()
    return result


def register_sample(
    session: Session,
    *,
    actor: User | None,
    coi: str,
    material_type: MaterialType | str,
    quantity: float | Decimal,
    unit: str,
    collected_at: datetime,
    timepoint: str | None = None,
    timepoint_day: int | None = None,
    cell_count: int | None = None,
) -> Item:
    """A primary sample of the episode (e.g. a follow-up blood draw) with a local ID."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("A sample is registered by a person at the bench.")
    episode = get_episode(session, coi)
    material = _material(material_type, Kind.ALIQUOT)
    code, check = new_local_id(session, actor.site, custody_settings()["local_id_digits"])
    item = Item(
        code=code,
        check_character=check,
        kind=Kind.ALIQUOT,
        material_type=material,
        episode=episode,
        site=actor.site,
        quantity=check_quantity(quantity, unit),
        unit=unit,
        cell_count=_cells(cell_count, material),
        collected_at=collected_at,
        timepoint=(timepoint or "").strip() or None,
        timepoint_day=timepoint_day,
    )
    add_item(session, actor=actor, item=item)
    session.commit()
    return item


def _material(value: MaterialType | str, kind: Kind) -> MaterialType:
    try:
        material = MaterialType(value)
    except ValueError:
        raise ValidationError(f"Unknown material type '{value}'.", field="material_type") from None
    if material not in TYPES_BY_KIND[kind]:
        raise ValidationError(
            f"{material.label} cannot be registered as {kind.label.lower()}.", field="material_type"
        )
    return material


def aliquot(
    session: Session,
    *,
    actor: User | None,
    parent_code: str,
    count: int,
    quantity_each: float | Decimal,
    unit: str,
    material_type: MaterialType | str,
    cell_count_each: int | None = None,
    timepoint: str | None = None,
    timepoint_day: int | None = None,
) -> list[Item]:
    """Split a parent into ``count`` aliquots n/N; their volume is taken from the parent."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("Aliquots are made by a person at the bench.")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 500:
        raise ValidationError("Make 1 to 500 aliquots at a time.", field="count")
    parent = find_item(session, parent_code, for_update=True)
    if parent.site_id != actor.site_id:
        raise Forbidden(
            f"{parent.code} is at {parent.site.code}; it is aliquoted where it is "
            f"(you work at {actor.site.code})."
        )
    if parent.state in TERMINAL_STATES[parent.kind] or parent.state in NOT_DERIVABLE:
        raise Conflict(f"{parent.code} is {parent.state.label}; it cannot be aliquoted now.")
    material = _material(material_type, Kind.ALIQUOT)
    each = check_quantity(quantity_each, unit)
    if unit != parent.unit:
        raise ValidationError(
            f"The parent is measured in {parent.unit}; use the same unit.", field="unit"
        )
    needed = each * count
    if needed > parent.quantity:
        raise ValidationError(
            f"{count} × {each} {unit} = {needed} {unit}, but {parent.code} holds only "
            f"{parent.quantity} {unit}.",
            field="quantity_each",
        )
    # Identifiers before audit rows: the counter is locked before the audit chain's head, in
    # the same order as every other registration, so two transactions never deadlock.
    digits = custody_settings()["local_id_digits"]
    codes = [new_local_id(session, actor.site, digits) for _ in range(count)]
    # Aliquots of material on hold are the same material: they inherit its open holds.
    parent_holds = holds.open_holds(session, parent.id)
    parent.quantity = parent.quantity - needed
    audit.record_changes(
        session, parent, actor=actor, action="aliquot", reason=f"{count} aliquots of {each} {unit}"
    )
    record_event(
        session,
        actor=actor,
        item=parent,
        action="aliquot",
        from_state=parent.state,
        from_site_id=parent.site_id,
        from_location=parent.location,
        from_custodian=parent.custodian,
        reason=f"{count} × {each} {unit} taken",
    )
    children = []
    for number, (code, check) in enumerate(codes, start=1):
        child = Item(
            code=code,
            check_character=check,
            kind=Kind.ALIQUOT,
            material_type=material,
            episode_id=parent.episode_id,
            parent=parent,
            site=actor.site,
            quantity=each,
            unit=unit,
            cell_count=_cells(cell_count_each, material),
            collected_at=parent.collected_at,
            timepoint=(timepoint or parent.timepoint),
            timepoint_day=timepoint_day if timepoint_day is not None else parent.timepoint_day,
            aliquot_number=number,
            aliquot_total=count,
        )
        children.append(
            add_item(
                session,
                actor=actor,
                item=child,
                reason=f"aliquot {number}/{count} of {parent.code}",
            )
        )
        for hold in parent_holds:
            holds.hold_items(
                session,
                actor=actor,
                items=[child],
                reason=hold.reason,
                detail=f"{hold.detail} (held with its parent {parent.code})",
            )
    commit_or_conflict(session)
    return children
