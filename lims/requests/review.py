"""Review of a request: the eligibility of each aliquot, the opt-out register checks, the
access committee's and the manager's signed decisions; approval reserves the aliquots."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.custody.domain import Action, State
from lims.custody.models import Hold, Item
from lims.custody.services import perform_many
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, ValidationError
from lims.patients.models import Episode, Patient
from lims.requests.models import (
    ACTIVE_LINE_STATUSES,
    AliquotRequest,
    Decision,
    LineStatus,
    OptOutCheck,
    RequestLine,
    RequestReview,
    RequestState,
    ReviewStage,
)
from lims.requests.notify import managers_of, technicians_of
from lims.requests.services import (
    check_step,
    committee_needed,
    committee_studies_of,
    get_request,
    lock_items,
    mail_after_commit,
    record_lines,
    require_site,
    set_state,
    settings,
    tell,
)

R = RequestState


# -- review ------------------------------------------------------------------------------------


def start_review(session: Session, *, actor: User | None, code: str) -> AliquotRequest:
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "start_review")
    require_site(actor, request)
    set_state(session, request, R.UNDER_REVIEW, actor)
    tell(
        session,
        [request.researcher],
        kind="under_review",
        request=request,
        message=f"Request {request.code} is under review by the biobank.",
    )
    session.commit()
    mail_after_commit(session)
    return request


@dataclass
class LineCheck:
    line: RequestLine
    #: Why it cannot be approved; empty when it can.
    reasons: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.reasons


def patients_of(session: Session, request: AliquotRequest) -> list[Patient]:
    return list(
        session.scalars(
            select(Patient)
            .join(Episode, Episode.patient_id == Patient.id)
            .join(Item, Item.episode_id == Episode.id)
            .join(RequestLine, RequestLine.item_id == Item.id)
            .where(RequestLine.request_id == request.id)
            .distinct()
            .order_by(Patient.pseudonym)
        )
    )


def latest_opt_out_checks(session: Session, patient_ids: Sequence[int]) -> dict[int, OptOutCheck]:
    latest: dict[int, OptOutCheck] = {}
    if not patient_ids:
        return latest
    for check in session.scalars(
        select(OptOutCheck)
        .where(OptOutCheck.patient_id.in_(list(patient_ids)))
        .order_by(OptOutCheck.checked_at, OptOutCheck.id)
    ):
        latest[check.patient_id] = check
    return latest


def check_lines(session: Session, request: AliquotRequest) -> list[LineCheck]:
    """Every rule an approval keeps, per line, with the reason for each one that fails."""
    lines = [line for line in request.lines if line.status is LineStatus.REQUESTED]
    if not lines:
        return []
    item_ids = [line.item_id for line in lines]
    held: dict[int, list[str]] = defaultdict(list)
    for hold in session.scalars(
        select(Hold).where(Hold.item_id.in_(item_ids), Hold.cleared_at.is_(None))
    ):
        held[hold.item_id].append(hold.reason.label)
    taken = dict(
        session.execute(
            select(RequestLine.item_id, AliquotRequest.code)
            .join(AliquotRequest, RequestLine.request_id == AliquotRequest.id)
            .where(
                RequestLine.item_id.in_(item_ids),
                RequestLine.status.in_(list(ACTIVE_LINE_STATUSES)),
                RequestLine.request_id != request.id,
            )
        ).all()
    )
    patients = {line.item.episode.patient_id: line.item.episode.patient for line in lines}
    checks = latest_opt_out_checks(session, list(patients))
    oldest = utcnow() - timedelta(days=int(settings()["opt_out_check_valid_days"]))
    result = []
    for line in lines:
        item, patient = line.item, line.item.episode.patient
        reasons = []
        if item.id in taken:
            reasons.append(f"reserved for another request ({taken[item.id]})")
        elif item.state is not State.STORED:
            reasons.append(f"not available ({item.state.label})")
        if held[item.id]:
            reasons.append("on hold (" + ", ".join(held[item.id]) + ")")
        if patient.consent_withdrawn_at is not None:
            reasons.append("consent withdrawn")
        elif not patient.consent_biobank:
            reasons.append("no consent to biobank research")
        elif request.genetic and not patient.consent_genetic:
            reasons.append("consent does not cover genetic analyses")
        check = checks.get(patient.id)
        if check is None or check.checked_at < oldest:
            reasons.append(
                f"opt-out register not checked for {patient.pseudonym} in the last "
                f"{settings()['opt_out_check_valid_days']} days"
            )
        elif check.registered:
            reasons.append(f"{patient.pseudonym} is in the opt-out register")
        result.append(LineCheck(line, reasons))
    return result


def record_opt_out_checks(
    session: Session,
    *,
    actor: User | None,
    code: str,
    registered: Iterable[str] = (),
    note: str = "",
) -> list[OptOutCheck]:
    """The manager looked every patient of the request up in the opt-out register; the
    pseudonyms in ``registered`` were found there (opted out), the others were not."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "record_opt_out")
    require_site(actor, request)
    patients = patients_of(session, request)
    known = {p.pseudonym: p for p in patients}
    found = {p.strip().upper() for p in registered if p and p.strip()}
    strangers = found - set(known)
    if strangers:
        raise ValidationError(
            "Not a patient of this request: " + ", ".join(sorted(strangers)[:10]),
            field="registered",
        )
    note = (note or "").strip()
    if len(note) > 200:
        raise ValidationError("The note is at most 200 characters.", field="note")
    checks = []
    now = utcnow()
    for patient in patients:
        check = OptOutCheck(
            patient_id=patient.id,
            checked_at=now,
            checked_by_id=actor.id,
            registered=patient.pseudonym in found,
            request_id=request.id,
            note=note,
        )
        session.add(check)
        audit.record_created(session, check, actor=actor, reason=note or None)
        checks.append(check)
    if request.state is R.SUBMITTED:
        set_state(session, request, R.UNDER_REVIEW, actor)
    session.commit()
    return checks


def _signed_record(request: AliquotRequest, decision: str, item_codes: Sequence[str]) -> dict:
    return {
        "request": request.code,
        "version": request.version,
        "decision": decision,
        "aliquots": ",".join(sorted(item_codes)),
    }


def _decision(value: str) -> Decision:
    try:
        return Decision(str(value).strip().lower())
    except ValueError:
        raise ValidationError("The decision is approved or rejected.", field="decision") from None


def committee_decide(
    session: Session,
    *,
    actor: User | None,
    code: str,
    study: str,
    decision: str,
    password: str | None,
    comment: str = "",
) -> RequestReview:
    """The access committee's signed decision for one study of the request."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "committee")
    verdict = _decision(decision)
    needed = committee_needed(session, request)
    if study not in needed:
        raise ValidationError(
            "This request needs no committee decision for that study.", field="study"
        )
    if study not in committee_studies_of(actor):
        raise Forbidden(f"You are not on the access committee of {study}.")
    if request.researcher_id == actor.id:
        raise Forbidden("Nobody decides on their own request.")
    if any(r.stage is ReviewStage.COMMITTEE and r.study == study for r in request.reviews):
        raise Conflict(f"The committee of {study} has decided on {request.code} already.")
    comment = (comment or "").strip()
    if verdict is Decision.REJECTED and not comment:
        raise ValidationError("Give the reason for the rejection.", field="comment")
    codes = [line.item.code for line in request.lines if line.status is LineStatus.REQUESTED]
    signature = audit.sign(
        session,
        signer=actor,
        password=password,
        meaning=verdict.value,
        entity="aliquot_request",
        entity_id=request.id,
        record=_signed_record(request, f"committee {study}: {verdict.value}", codes),
        comment=comment or None,
    )
    review = RequestReview(
        request=request,
        stage=ReviewStage.COMMITTEE,
        study=study,
        decision=verdict,
        reviewer_id=actor.id,
        signature_id=signature.id,
        comment=comment,
    )
    session.add(review)
    audit.record_created(session, review, actor=actor, reason=comment or None)
    if request.state is R.SUBMITTED:
        set_state(session, request, R.UNDER_REVIEW, actor)
    if verdict is Decision.REJECTED:
        _reject(session, request, actor, f"access committee of {study}: {comment}")
    else:
        tell(
            session,
            managers_of(session, request.site_id),
            kind="committee",
            request=request,
            message=f"The access committee of {study} approved request {request.code}.",
        )
    session.commit()
    mail_after_commit(session)
    return review


def _reject(session: Session, request: AliquotRequest, actor: User, why: str) -> None:
    for line in request.lines:
        if line.status is LineStatus.REQUESTED:
            line.status = LineStatus.NOT_APPROVED
            line.reason = "request rejected"
            audit.record_changes(session, line, actor=actor, action="reject")
    request.decided_at = request.closed_at = utcnow()
    set_state(session, request, R.REJECTED, actor, why)
    tell(
        session,
        [request.researcher],
        kind="rejected",
        request=request,
        message=f"Request {request.code} was rejected: {why}"[:500],
    )


def decide(
    session: Session,
    *,
    actor: User | None,
    code: str,
    decision: str,
    password: str | None,
    comment: str = "",
    approve: Iterable[str] | None = None,
) -> AliquotRequest:
    """The manager's signed decision. Approval reserves the chosen aliquots (``approve``: their
    codes; None: every line) in this one transaction, or refuses whole, naming each aliquot
    that cannot be approved and why, e.g. one another approval reserved a moment before."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "decide")
    require_site(actor, request)
    verdict = _decision(decision)
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise ValidationError("The comment is at most 2,000 characters.", field="comment")
    if request.researcher_id == actor.id:
        raise Forbidden("Nobody decides on their own request.")
    if verdict is Decision.REJECTED:
        if not comment:
            raise ValidationError("Give the reason for the rejection.", field="comment")
        audit_signature = audit.sign(
            session,
            signer=actor,
            password=password,
            meaning="rejected",
            entity="aliquot_request",
            entity_id=request.id,
            record=_signed_record(request, "rejected", []),
            comment=comment,
        )
        _review(session, request, actor, verdict, audit_signature.id, comment, 0)
        _reject(session, request, actor, comment)
        session.commit()
        mail_after_commit(session)
        return request
    waiting = committee_needed(session, request) - {
        r.study for r in request.reviews if r.stage is ReviewStage.COMMITTEE
    }
    if waiting:
        raise Conflict(
            "The access committee has not decided yet for: " + ", ".join(sorted(waiting)) + "."
        )
    requested = {
        line.item.code: line for line in request.lines if line.status is LineStatus.REQUESTED
    }
    if approve is None:
        chosen = list(requested)
    else:
        chosen = list(dict.fromkeys(str(c).strip().upper() for c in approve if str(c).strip()))
        strangers = [c for c in chosen if c not in requested]
        if strangers:
            raise ValidationError(
                "Not asked for in this request: " + ", ".join(strangers[:10]), field="approve"
            )
    if not chosen:
        raise ValidationError(
            "Approve at least one aliquot, or reject the request.", field="approve"
        )
    lock_items(session, [requested[c].item_id for c in chosen])
    checks = {check.line.item.code: check for check in check_lines(session, request)}
    refused = [f"{c}: {'; '.join(checks[c].reasons)}" for c in chosen if not checks[c].eligible]
    if refused:
        session.rollback()
        raise Conflict(
            f"Nothing was approved; {len(refused)} of the chosen aliquots cannot be: "
            + " | ".join(refused[:25])
            + (f" | … and {len(refused) - 25} more" if len(refused) > 25 else ""),
            field="approve",
        )
    signature = audit.sign(
        session,
        signer=actor,
        password=password,
        meaning="approved",
        entity="aliquot_request",
        entity_id=request.id,
        record=_signed_record(request, "approved", chosen),
        comment=comment or None,
    )
    picked = set(chosen)
    try:
        perform_many(
            session,
            actor=actor,
            items=[requested[c].item for c in chosen],
            action=Action.RESERVE,
            reason=f"request {request.code}",
            internal=True,
        )
        for code_, line in requested.items():
            if code_ in picked:
                line.status = LineStatus.APPROVED
            else:
                line.status = LineStatus.NOT_APPROVED
                line.reason = "; ".join(checks[code_].reasons) or "not chosen by the manager"
        record_lines(session, requested.values(), actor=actor, action="decide")
        partly = len(chosen) < len(requested)
        _review(session, request, actor, verdict, signature.id, comment, len(chosen))
        request.decided_at = utcnow()
        set_state(
            session, request, R.PARTLY_APPROVED if partly else R.APPROVED, actor, comment or None
        )
    except IntegrityError:  # the unique index on active lines: another approval won the race
        session.rollback()
        raise Conflict(
            "Another approval reserved some of these aliquots at the same moment; nothing was "
            "approved. Open the request again to see which."
        ) from None
    kind = "partly_approved" if partly else "approved"
    tell(
        session,
        [request.researcher],
        kind=kind,
        request=request,
        message=f"Request {request.code} was {'partly ' if partly else ''}approved: "
        f"{len(chosen)} of {len(requested)} aliquots reserved.",
    )
    tell(
        session,
        technicians_of(session, request.site_id),
        kind=kind,
        request=request,
        message=f"Request {request.code}: {len(chosen)} aliquots to pick.",
    )
    session.commit()
    mail_after_commit(session)
    return request


def _review(
    session: Session,
    request: AliquotRequest,
    actor: User,
    verdict: Decision,
    signature_id: int,
    comment: str,
    count: int,
) -> None:
    review = RequestReview(
        request=request,
        stage=ReviewStage.MANAGER,
        decision=verdict,
        reviewer_id=actor.id,
        signature_id=signature_id,
        comment=comment,
        approved_count=count,
    )
    session.add(review)
    audit.record_created(session, review, actor=actor, reason=comment or None)
