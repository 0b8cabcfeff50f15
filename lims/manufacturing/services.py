"""Manufacturing of academic products: lots from apheresis, QC review, quarantine and release.

A lot's bags move together. Quarantine and release are one transaction over all the lot's
bags: a lot is never half released, and one bag that may not be released stops them all.
Every state change goes through :func:`lims.custody.services.perform_action`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit import services as audit
from lims.audit.models import ESignature
from lims.auth.models import Role, User
from lims.auth.services import confirm_second_person, require_role
from lims.custody import production
from lims.custody.domain import Action, Kind, State
from lims.custody.models import CustodyEvent, ProductLot, QcResult
from lims.custody.services import (
    code_from_scan,
    commit_or_conflict,
    custody_settings,
    find_item,
    perform_action,
)
from lims.db import utcnow
from lims.errors import Conflict, DomainError, InvalidTransition, ValidationError
from lims.manufacturing.overview import (
    BENCH,
    PENDING,
    bag_name,
    get_lot,
    qc_summary,
    release_blockers,
)

#: Lot numbers appear in addresses and on labels: letters, digits and a few separators.
LOT_NUMBER = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,39}")
MAX_BAGS = 20


# -- writing ----------------------------------------------------------------------------------


def make_lot(
    session: Session,
    *,
    actor: User | None,
    lot_number: str,
    apheresis_scans: list[str],
    bag_count: int,
    volume_ml: float | Decimal,
    cells_per_bag: int | None = None,
    expires_at: datetime | None = None,
) -> ProductLot:
    """A lot from scanned (or typed) apheresis codes: checks the scans and names the one that
    is wrong, then lets :func:`production.create_lot` consume them and register the bags."""
    require_role(actor, *BENCH)
    number = (lot_number or "").strip().upper()
    if not LOT_NUMBER.fullmatch(number):
        raise ValidationError(
            "A lot number is 1 to 40 letters, digits, '-', '.' or '_', starting with a letter "
            "or digit.",
            field="lot_number",
        )
    codes: list[str] = []
    for scan in apheresis_scans:
        if not scan.strip():
            continue
        try:
            code = code_from_scan(scan, manual=True)
        except ValidationError as exc:
            raise ValidationError(f"{scan.strip()}: {exc.message}", field="apheresis") from None
        if code not in codes:  # scanned twice: one collection all the same
            codes.append(code)
    if not codes:
        raise ValidationError(
            "Scan the apheresis collections the lot is made from.", field="apheresis"
        )
    for code in codes:
        source = find_item(session, code)
        if source.kind is not Kind.APHERESIS:
            raise ValidationError(
                f"{code} is a {source.kind.label.lower()}, not an apheresis collection.",
                field="apheresis",
            )
        if source.state is not State.IN_MANUFACTURING:
            raise Conflict(
                f"Apheresis {identifiers.eye_readable(code)} {source.check_character} is "
                f"{source.state.label}, not in manufacturing: start manufacturing first.",
                field="apheresis",
            )
    if isinstance(bag_count, bool) or not isinstance(bag_count, int):
        raise ValidationError("Give the number of bags.", field="bags")
    if not 1 <= bag_count <= MAX_BAGS:
        raise ValidationError(f"A lot has 1 to {MAX_BAGS} bags.", field="bags")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationError("The expiry needs a time zone.", field="expires_at")
        expires_at = expires_at.astimezone(UTC)
        if expires_at <= utcnow():
            raise ValidationError("The expiry is in the past.", field="expires_at")
    spec = production.BagSpec(volume_ml=volume_ml, cell_count=cells_per_bag)
    try:
        return production.create_lot(
            session,
            actor=actor,
            lot_number=number,
            apheresis_codes=codes,
            bags=[spec] * bag_count,
            expires_at=expires_at,
        )
    except DomainError:
        session.rollback()
        raise


def quarantine_lot(session: Session, *, actor: User | None, lot_number: str) -> list[CustodyEvent]:
    """Every manufactured bag of the lot into quarantine, in one transaction."""
    require_role(actor, *BENCH)
    if actor is None:
        raise ValidationError("Quarantine is done by a person at the bench.")
    lot = get_lot(session, lot_number)
    codes = [
        bag.code for bag in sorted(lot.bags, key=lambda b: b.id) if bag.state is State.MANUFACTURED
    ]
    if not codes:
        raise Conflict(f"No bag of lot {lot.lot_number} is waiting for quarantine.")
    try:
        events = [
            perform_action(
                session,
                actor=actor,
                code=code,
                action=Action.QUARANTINE,
                reason=f"lot {lot.lot_number}",
                commit=False,
            )
            for code in codes
        ]
        commit_or_conflict(session)
    except DomainError:
        session.rollback()
        raise
    return events


def review_qc(
    session: Session,
    *,
    actor: User | None,
    lot_number: str,
    password: str | None,
    comment: str | None = None,
) -> ESignature:
    """The manager's signed review of the lot's QC results (meaning "reviewed")."""
    require_role(actor, Role.MANAGER)
    if actor is None:
        raise ValidationError("A QC review is signed by a person.")
    lot = get_lot(session, lot_number)
    results = list(
        session.scalars(select(QcResult).where(QcResult.lot_id == lot.id).order_by(QcResult.id))
    )
    missing, failed = qc_summary(results)
    if missing:
        raise Conflict(
            f"The QC of lot {lot.lot_number} cannot be reviewed yet: {', '.join(missing)} missing."
        )
    comment = (comment or "").strip() or None
    # The signature is bound to the results as they are now: a later result is not reviewed.
    record = {
        "lot_number": lot.lot_number,
        "coi": lot.episode.coi,
        "qc_results": "; ".join(
            f"{r.id}:{r.test}={r.value} {r.unit} [{r.specification}] "
            f"{'pass' if r.passed else 'fail'}"
            for r in results
        ),
    }
    signature = audit.sign(
        session,
        signer=actor,
        password=password,
        meaning="reviewed",
        entity="product_lot",
        entity_id=lot.id,
        record=record,
        comment=comment,
    )
    outcome = f"failed: {', '.join(failed)}" if failed else "all passed"
    audit.record_action(
        session,
        actor=actor,
        entity="product_lot",
        entity_id=lot.id,
        action="review_qc",
        detail=f"{len(results)} QC results reviewed, {outcome} (signature {signature.id})",
        reason=comment,
    )
    session.commit()
    return signature


def release_lot(
    session: Session,
    *,
    actor: User | None,
    lot_number: str,
    password: str | None,
    witness_username: str | None,
    witness_password: str | None,
) -> list[CustodyEvent]:
    """Release every quarantined bag of the lot, or none: one blocked bag stops them all."""
    require_role(actor, Role.MANAGER)
    if actor is None:
        raise ValidationError("A release is signed by a person.")
    lot = get_lot(session, lot_number)
    bags = [bag for bag in sorted(lot.bags, key=lambda b: b.id) if bag.state in PENDING]
    if not any(bag.state is State.QUARANTINE for bag in bags):
        raise Conflict(f"No bag of lot {lot.lot_number} is in quarantine; nothing to release.")
    # Read-only: names every blocked bag at once, before anyone types a password in vain.
    blockers = release_blockers(session, lot)
    if blockers:
        raise Conflict("Nothing was released. " + " ".join(blockers))
    witness = None
    if custody_settings()["second_person"].get("release") or witness_username:
        witness = confirm_second_person(
            session, actor=actor, username=witness_username, password=witness_password
        )
    targets = [(bag.code, bag_name(bag)) for bag in bags if bag.state is State.QUARANTINE]
    events = []
    try:
        for code, name in targets:
            try:
                events.append(
                    perform_action(
                        session,
                        actor=actor,
                        code=code,
                        action=Action.RELEASE,
                        password=password,
                        witness=witness,
                        commit=False,
                    )
                )
            except InvalidTransition as exc:  # changed since the check above
                raise Conflict(f"Nothing was released. {name}: {exc.message}") from None
        audit.record_action(
            session,
            actor=actor,
            entity="product_lot",
            entity_id=lot.id,
            action="release",
            detail=f"{len(events)} bags released"
            + (f" with {witness.user.username} as second person" if witness else ""),
        )
        commit_or_conflict(session)
    except DomainError:
        session.rollback()
        raise
    return events
