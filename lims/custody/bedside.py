"""The bedside identity check: wristband, cassette (CoI) and bag must be one patient's."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import confirm_second_person, require_role
from lims.custody.domain import Action, Kind, State
from lims.custody.models import BedsideCheck
from lims.custody.services import (
    commit_or_conflict,
    custody_settings,
    find_item,
    perform_action,
)
from lims.errors import Conflict, InvalidTransition, ValidationError
from lims.patients.models import IdentifierKind
from lims.patients.services import matches_identifier, parse_identifier_kind


@dataclass(frozen=True)
class CheckOutcome:
    check: BedsideCheck
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def _coi_value(text: str) -> str | None:
    raw = text.strip().upper()
    try:
        return identifiers.parse_coi(raw, scanned=raw.startswith("&/")).value
    except identifiers.IdentifierError:
        return None


def bedside_check(
    session: Session,
    *,
    actor: User,
    bag_scan: str,
    coi_scan: str,
    wristband_scan: str,
    wristband_kind: IdentifierKind | str = IdentifierKind.CPR,
    witness_username: str | None = None,
    witness_password: str | None = None,
) -> CheckOutcome:
    """Compare the three scans; record the check either way. A pass verifies the identity.

    A failed check is committed (it is part of the record) and then refused with a Conflict,
    so infusion stays blocked until a check passes. A pass needs the second person
    (``custody.second_person.bedside_check``), who signs the verification with the checker.
    """
    require_role(actor, Role.TECHNICIAN, Role.MANAGER)
    kind = parse_identifier_kind(wristband_kind, field="wristband_kind")
    if not (bag_scan and coi_scan and wristband_scan):
        raise ValidationError("Scan the wristband, the cassette and the bag.")
    bag = find_item(session, bag_scan, for_update=True)
    if bag.kind is not Kind.PRODUCT_BAG:
        raise ValidationError(f"{bag.code} is not a product bag.", field="bag")
    if bag.state is not State.THAWED:
        raise InvalidTransition(
            f"The bag is {bag.state.label}; the bedside check is done after thaw."
        )
    episode = bag.episode
    mismatches = []
    if not matches_identifier(episode.patient, kind, wristband_scan):
        mismatches.append("the wristband is not the patient this bag was made for")
    coi = _coi_value(coi_scan)
    if coi is None:
        mismatches.append("the cassette label is not a valid Chain of Identity identifier")
    elif coi != episode.coi:
        mismatches.append("the cassette's Chain of Identity is not this bag's")
    if mismatches:
        check = BedsideCheck(
            item_id=bag.id,
            episode_id=episode.id,
            passed=False,
            mismatches="; ".join(mismatches),
            checked_by_id=actor.id,
        )
        session.add(check)
        audit.record_created(session, check, actor=actor)
        session.commit()
        raise Conflict("IDENTITY MISMATCH – do not infuse: " + "; ".join(mismatches) + ".")
    witness = None
    if custody_settings()["second_person"].get("bedside_check") or witness_username:
        # Checked only now, so that a mismatch above is recorded whatever the second person
        # typed; nothing is written yet, so a wrong password here leaves no half check.
        witness = confirm_second_person(
            session, actor=actor, username=witness_username, password=witness_password
        )
    event = perform_action(
        session,
        actor=actor,
        code=bag.code,
        action=Action.VERIFY_IDENTITY,
        internal=True,
        witness=witness,
        commit=False,
    )
    check = BedsideCheck(
        item_id=bag.id,
        episode_id=episode.id,
        passed=True,
        mismatches="",
        checked_by_id=actor.id,
        witness_signature_id=event.witness_signature_id,
    )
    session.add(check)
    audit.record_created(session, check, actor=actor)
    commit_or_conflict(session)
    return CheckOutcome(check, ())
