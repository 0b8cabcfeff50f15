"""Accepting a rack-scanner report: a manager's signed decision that the scan is right.

Misplaced and unexpected tubes are recorded where the scanner saw them and missing tubes are
recorded lost or left as they are, each through ``perform_action`` as a custody event, all in
one transaction (:mod:`lims.storage.verification` makes the report).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.custody import domain
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import (
    Move,
    commit_or_conflict,
    gather_facts,
    held_by_request,
    perform_action,
)
from lims.db import utcnow
from lims.errors import Conflict, DomainError, NotFound, ValidationError
from lims.storage import services as storage
from lims.storage.models import Box
from lims.storage.verification import (
    _bench_person,
    _same_site,
)
from lims.storage.verification_models import (
    Finding,
    RackVerification,
    RackVerificationLine,
    VerificationStatus,
)

#: How a line's resolution names the step that recorded the tube where it was read.
DONE = {
    Action.MOVE: "moved to",
    Action.STORE: "stored at",
    Action.RETURN_TO_STORAGE: "returned to storage at",
}


class MissingDecision(StrEnum):
    """What the manager decides about a tube the scan did not show."""

    LOST = "lost"
    LEAVE = "leave"


@dataclass
class _Plan:
    """The steps an acceptance takes: relocations into the box and tubes recorded lost."""

    relocations: list[tuple[RackVerificationLine, Item, Action]]
    lost: list[tuple[RackVerificationLine, Item]]


def accept_verification(
    session: Session,
    *,
    actor: User | None,
    verification_id: int,
    password: str | None,
    note: str = "",
    missing: Mapping[int, MissingDecision | str] | None = None,
) -> RackVerification:
    """A manager's signed acceptance of a report (``missing``: line id → lost or leave).

    Records misplaced tubes where the scanner read them (move), unexpected tubes of this site
    too (move from another box, store if never stored, return if checked out), and missing
    tubes lost or left as the manager chose; codes unknown to the LIMS are only reported.
    One transaction: one step refused and nothing changes.
    """
    actor = _bench_person(actor, Role.MANAGER)
    verification = session.scalar(
        select(RackVerification)
        .where(RackVerification.id == verification_id)
        .with_for_update(of=RackVerification)
        .execution_options(populate_existing=True)
    )
    if verification is None:
        raise NotFound("No such rack verification.")
    box = storage.box_by_code(session, verification.box.code, for_update=True)
    _same_site(actor, box)
    refusal = {
        VerificationStatus.ACCEPTED: "This report was accepted already.",
        VerificationStatus.CLEAN: "This scan found the box as recorded: nothing to accept.",
        VerificationStatus.SUPERSEDED: "A newer scan of the box replaced this report: open it.",
    }.get(verification.status)
    if refusal:
        raise Conflict(refusal)
    _refuse_if_changed(session, verification, box)
    note = (note or "").strip()[:2000]
    try:
        plan = _plan(session, actor, verification, box, _decisions(verification, missing or {}))
        signature = audit.sign(
            session,
            signer=actor,
            password=password,
            meaning="verified",
            entity="rack_verification",
            entity_id=verification.id,
            record={
                "box": box.code,
                "sha256": verification.sha256,
                "lines": len(verification.lines),
                "version": verification.version,
            },
            comment=note or None,
        )
        _carry_out(session, actor, verification, box, plan, signature.id, note)
        verification.status = VerificationStatus.ACCEPTED
        verification.accepted_by_id = actor.id
        verification.accepted_at = utcnow()
        verification.signature_id = signature.id
        verification.note = note
        audit.record_changes(session, verification, actor=actor, action="accept", reason=note)
        commit_or_conflict(session)
    except IntegrityError:  # a position filled by someone else meanwhile
        session.rollback()
        raise Conflict(
            "The box changed while the report was being accepted; nothing was changed. "
            "Scan the box again."
        ) from None
    except DomainError:
        session.rollback()
        raise
    return verification


def _refuse_if_changed(session: Session, verification: RackVerification, box: Box) -> None:
    """Any custody step on the box's items (or the items the report names) after the scan
    makes the report stale."""
    item_ids = {line.item_id for line in verification.lines if line.item_id is not None}
    item_ids |= set(session.scalars(select(Item.id).where(Item.box_id == box.id)))
    if not item_ids:
        return
    later = session.scalar(
        select(func.count())
        .select_from(CustodyEvent)
        .where(CustodyEvent.item_id.in_(item_ids), CustodyEvent.at > verification.uploaded_at)
    )
    if later:
        raise Conflict(
            f"Box {box.code} changed since this scan ({later} custody step"
            f"{'s' if later != 1 else ''} since): scan the box again. Nothing was changed."
        )


def _decisions(
    verification: RackVerification, missing: Mapping[int, MissingDecision | str]
) -> dict[int, MissingDecision]:
    lines = {line.id: line for line in verification.lines_of(Finding.MISSING)}
    unknown = [line_id for line_id in missing if line_id not in lines]
    if unknown:
        raise ValidationError("A decision names a tube this report does not miss.", field="missing")
    decisions = {}
    for line_id, line in lines.items():
        try:
            decisions[line_id] = MissingDecision(missing.get(line_id, ""))
        except ValueError:
            code = line.item.code if line.item else "a tube"
            raise ValidationError(
                f"Choose for {code} (missing): recorded lost, or left as it is.", field="missing"
            ) from None
    return decisions


def _plan(
    session: Session,
    actor: User,
    verification: RackVerification,
    box: Box,
    decisions: dict[int, MissingDecision],
) -> _Plan:
    plan = _Plan([], [])
    for line in verification.lines:
        item = line.item
        if line.finding is Finding.MISSING and item is not None:
            if decisions[line.id] is MissingDecision.LOST:
                why = _refusal(session, actor, item, Action.LOSE)
                if why:
                    raise Conflict(
                        f"{item.code} cannot be recorded lost: {why} Nothing was changed."
                    )
                plan.lost.append((line, item))
            else:
                line.resolution = "left as it is"
        elif line.finding is Finding.MISPLACED and item is not None:
            plan.relocations.append((line, item, Action.MOVE))
        elif line.finding is Finding.UNEXPECTED and item is None:
            line.resolution = "unknown to the LIMS: not recorded"
        elif line.finding is Finding.UNEXPECTED and item is not None:
            step = _step_into_box(item)
            why = _refusal(session, actor, item, step)
            if why is None:
                try:
                    storage.check_place(session, actor, item, box)
                except DomainError as exc:
                    why = exc.message
            if why:
                line.resolution = f"not recorded here: {why}"[:200]
            else:
                plan.relocations.append((line, item, step))
        elif line.finding is Finding.UNREADABLE:
            line.resolution = "not read: nothing changed"
    _refuse_taken_targets(session, box, plan)
    return plan


def _step_into_box(item: Item) -> Action:
    if item.state in storage.IN_BOX:
        return Action.MOVE
    if item.state is State.CHECKED_OUT:
        return Action.RETURN_TO_STORAGE
    return Action.STORE


def _refusal(session: Session, actor: User, item: Item, step: Action) -> str | None:
    request = held_by_request(session, item)
    if request is not None and step is not Action.MOVE:
        return f"it is held by request {request} (record it short on the pick list)."
    decision = domain.check_transition(
        item.kind,
        item.state,
        step,
        actor.role,
        gather_facts(session, item),
        internal=step is Action.MOVE,
    )
    if decision.allowed:
        return None
    return decision.refusals[0].message if decision.refusals else "not allowed."


def _refuse_taken_targets(session: Session, box: Box, plan: _Plan) -> None:
    """A tube can be recorded where the scanner saw it only if the tube recorded there moves
    or is recorded lost too (a missing tube left as it is keeps its place)."""
    leaving = {item.id for _, item, _ in plan.relocations} | {item.id for _, item in plan.lost}
    problems = []
    for line, item, _ in plan.relocations:
        holder = session.scalar(
            select(Item).where(Item.box_id == box.id, Item.position == line.position)
        )
        if holder is not None and holder.id != item.id and holder.id not in leaving:
            problems.append(
                f"{storage.position_name(box, line.position)} is recorded as the place of "
                f"{holder.code} ({holder.state.label}), which stays there"
            )
    if problems:
        raise Conflict(
            "Nothing was changed: "
            + "; ".join(problems)
            + ". Record that tube lost or move it first, then accept."
        )


def _carry_out(
    session: Session,
    actor: User,
    verification: RackVerification,
    box: Box,
    plan: _Plan,
    signature_id: int,
    note: str,
) -> None:
    reason = f"rack scan of {box.code} (verification {verification.id})" + (
        f": {note}" if note else ""
    )
    for line, item in plan.lost:
        event = perform_action(
            session,
            actor=actor,
            code=item.code,
            action=Action.LOSE,
            reason=f"not found in {reason}",
            commit=False,
        )
        event.signature_id = signature_id
        line.resolution = "recorded lost"
    # Free the old places first: two tubes swapped (A1 <-> A2) would otherwise each take a
    # place the other still holds, which the unique index on (box, position) refuses.
    for _, item, _ in plan.relocations:
        if item.box_id == box.id and item.position is not None:
            item.position = None
            audit.record_changes(session, item, actor=actor, action="unplace", reason=reason)
    session.flush()
    for line, item, step in plan.relocations:
        event = perform_action(
            session,
            actor=actor,
            code=item.code,
            action=step,
            reason=reason,
            move=Move(
                location=storage.location_of(box, line.position),
                box_id=box.id,
                position=line.position,
            ),
            internal=step is Action.MOVE,
            commit=False,
        )
        event.signature_id = signature_id
        line.resolution = f"{DONE[step]} {storage.position_name(box, line.position)}"
