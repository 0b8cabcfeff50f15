"""The use cases of an aliquot request, from the researcher's draft to the receipt.

Every function takes plain values, checks who may do it and in which state, changes the
request, its lines and the tubes' custody (through ``perform_action`` or ``perform_many``,
which write the custody events and the audit rows) in one transaction, and commits or raises a
DomainError with nothing written. Notifications are rows of the same transaction; their
e-mail copies go out after the commit (``lims.requests.notify.send_mail``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.custody import numbering
from lims.custody.domain import Action, Kind, State
from lims.custody.holds import open_holds
from lims.custody.models import Item, MaterialType
from lims.custody.services import find_item, perform_many
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.patients.models import Episode
from lims.requests import notify
from lims.requests.domain import OPEN_STATES, STEPS, TO_PICK, TRAVELLING
from lims.requests.models import (
    AliquotRequest,
    Delivery,
    LineStatus,
    RequestCriterion,
    RequestLine,
    RequestState,
)
from lims.requests.notify import managers_of

R = RequestState
TEXT_FIELDS = {
    "title": ("Project title", 200),
    "principal_investigator": ("Principal investigator", 120),
    "ethics_ref": ("Ethics approval reference", 60),
    "dpa_ref": ("Data processing agreement reference", 60),
    "recipient_institution": ("Recipient institution", 200),
    "mta_ref": ("Material transfer agreement reference", 60),
    "intended_analyses": ("Intended analyses", 4000),
    "delivery_details": ("Shipping or pick-up details", 2000),
}
REQUIRED_TO_SUBMIT = (
    "title",
    "principal_investigator",
    "ethics_ref",
    "dpa_ref",
    "intended_analyses",
    "delivery_details",
)


def tell(session: Session, users: Iterable[User], **message: Any) -> None:
    """Notify these people in this transaction; their e-mail goes after the commit."""
    session.info.setdefault("lims_notifications", []).extend(
        notify.notify(session, users, **message)
    )


def mail_after_commit(session: Session) -> None:
    """Send the e-mail copies of the notifications this transaction committed."""
    notify.send_mail(current_app, session.info.pop("lims_notifications", []))


def settings() -> dict[str, Any]:
    return current_app.config["LIMS"]["requests"]


# -- finding and seeing ---------------------------------------------------------------------


def committee_studies_of(user: User) -> set[str]:
    """The studies whose access committee this user sits on."""
    committees = settings()["access_committee"]
    return {study for study, members in committees.items() if user.username in members}


def studies_of(session: Session, request: AliquotRequest) -> set[str]:
    return set(
        session.scalars(
            select(Episode.protocol)
            .join(Item, Item.episode_id == Episode.id)
            .join(RequestLine, RequestLine.item_id == Item.id)
            .where(RequestLine.request_id == request.id)
            .distinct()
        )
    ) | {c.study for c in request.criteria if c.study}


def committee_needed(session: Session, request: AliquotRequest) -> set[str]:
    """The studies of this request that have an access committee."""
    return studies_of(session, request) & set(settings()["access_committee"])


def may_see(session: Session, actor: User, request: AliquotRequest) -> bool:
    if actor.role is Role.RESEARCHER and request.researcher_id == actor.id:
        return True
    if request.state is R.DRAFT:
        return False
    if actor.role in {Role.MANAGER, Role.TECHNICIAN} and request.site_id == actor.site_id:
        return True
    mine = committee_studies_of(actor)
    return bool(mine and mine & committee_needed(session, request))


def get_request(
    session: Session, actor: User | None, code: str, *, for_update: bool = False
) -> AliquotRequest:
    """The request with this code, if ``actor`` may see it (else NotFound: no hint it exists)."""
    text = (code or "").strip().upper()
    query = select(AliquotRequest).where(AliquotRequest.code == text)
    if for_update:
        query = query.with_for_update(of=AliquotRequest).execution_options(populate_existing=True)
    request = session.scalar(query) if len(text) <= 16 else None
    if request is None or actor is None or not may_see(session, actor, request):
        raise NotFound(f"No request {text[:40]}.")
    return request


def requests_for(session: Session, actor: User, *, states: Iterable[R] | None = None):
    """The requests this person works with, newest first: a researcher's own, the site's for
    staff, and those of the studies whose committee they sit on."""
    query = select(AliquotRequest).order_by(AliquotRequest.id.desc())
    if states is not None:
        query = query.where(AliquotRequest.state.in_(list(states)))
    if actor.role is Role.RESEARCHER:
        mine = list(session.scalars(query.where(AliquotRequest.researcher_id == actor.id)))
    elif actor.role in {Role.MANAGER, Role.TECHNICIAN}:
        mine = list(
            session.scalars(
                query.where(
                    AliquotRequest.site_id == actor.site_id, AliquotRequest.state != R.DRAFT
                )
            )
        )
    else:
        mine = []
    if committee_studies_of(actor):
        seen = {r.id for r in mine}
        others = session.scalars(
            query.where(AliquotRequest.state.in_([R.SUBMITTED, R.UNDER_REVIEW]))
        )
        mine += [r for r in others if r.id not in seen and may_see(session, actor, r)]
        mine.sort(key=lambda r: r.id, reverse=True)
    return mine


def check_step(session: Session, actor: User | None, request: AliquotRequest, step: str) -> User:
    if actor is None:
        raise Forbidden("Requests are handled by people signed in, not from the command line.")
    rule = STEPS[step]
    if actor.role not in rule.roles:
        raise Forbidden("Your role may not do this.")
    if request.state not in rule.from_states:
        raise Conflict(
            f"Request {request.code} is {request.state.label}; it cannot {_words(step)}."
        )
    return actor


def _words(step: str) -> str:
    return {
        "edit": "be changed",
        "submit": "be submitted",
        "cancel": "be cancelled",
        "start_review": "be taken for review",
        "record_opt_out": "take opt-out checks",
        "committee": "take the committee's decision",
        "decide": "be approved or rejected",
        "pick": "be picked",
        "dispatch": "be handed over or shipped",
        "receive": "be received",
    }[step]


def set_state(
    session: Session, request: AliquotRequest, state: R, actor: User, reason: str | None = None
) -> None:
    request.state = state
    audit.record_changes(
        session, request, actor=actor, action=f"request_{state.value}", reason=reason
    )
    # Written now, so that a second change of state in the same step gets rows of its own.
    session.flush()


def require_site(actor: User, request: AliquotRequest) -> None:
    """The biobank that serves the request reviews and fulfils it; to the staff of other
    sites (a committee member, say) it is as if it were not there."""
    if request.site_id != actor.site_id:
        raise NotFound(f"No request {request.code}.")


def require_own(actor: User, request: AliquotRequest) -> None:
    if request.researcher_id != actor.id:
        raise Forbidden("Only the researcher who made the request can do this.")


# -- the researcher's draft -------------------------------------------------------------------


def _clean_text(values: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, (label, longest) in TEXT_FIELDS.items():
        if name not in values or values[name] is None:
            continue
        value = values[name]
        if not isinstance(value, str):
            raise ValidationError(f"{label} is text.", field=name)
        value = value.strip()
        if "\x00" in value:
            raise ValidationError(f"{label} holds a character that is not allowed.", field=name)
        if len(value) > longest:
            raise ValidationError(f"{label} is at most {longest} characters.", field=name)
        cleaned[name] = value
    for name in ("external", "genetic"):
        if name in values and values[name] is not None:
            if not isinstance(values[name], bool):
                raise ValidationError(f"'{name}' is true or false.", field=name)
            cleaned[name] = values[name]
    if values.get("delivery") is not None:
        try:
            cleaned["delivery"] = Delivery(values["delivery"])
        except ValueError:
            raise ValidationError("Delivery is pick_up or shipment.", field="delivery") from None
    return cleaned


def create_request(
    session: Session, *, actor: User | None, commit: bool = True, **values: Any
) -> AliquotRequest:
    """A new draft (the researcher's cart) with whatever details are known yet. ``commit``
    False: part of the caller's transaction (a cart made by its first addition, which
    refuses it with the addition)."""
    if actor is None or actor.role is not Role.RESEARCHER:
        raise Forbidden("Requests are made by researchers.")
    cleaned = _clean_text(values)
    year = utcnow().year
    number = numbering.next_value(session, f"request:{year}")
    request = AliquotRequest(
        code=f"REQ-{year}-{number:05d}",
        state=R.DRAFT,
        researcher_id=actor.id,
        site_id=actor.site_id,
        **cleaned,
    )
    session.add(request)
    audit.record_created(session, request, actor=actor)
    if commit:
        session.commit()
    return request


def update_request(
    session: Session, *, actor: User | None, code: str, **values: Any
) -> AliquotRequest:
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "edit")
    require_own(actor, request)
    for name, value in _clean_text(values).items():
        setattr(request, name, value)
    audit.record_changes(session, request, actor=actor)
    session.commit()
    return request


def ineligible_to_add(session: Session, item: Item) -> str | None:
    """Why a researcher cannot put this tube in a cart (None: they can)."""
    if item.kind is not Kind.ALIQUOT:
        return f"{item.code} is not a biobank aliquot."
    if item.state is not State.STORED:
        return f"{item.code} is not available ({item.state.label})."
    if open_holds(session, item.id):
        return f"{item.code} is not available (on hold)."
    patient = item.episode.patient
    if patient.consent_withdrawn_at is not None or not patient.consent_biobank:
        return f"{item.code} is not available for research."
    return None


def add_items(
    session: Session, *, actor: User | None, code: str, item_codes: Sequence[str]
) -> list[RequestLine]:
    """Put tubes in the draft (all or none: one that cannot be added refuses the lot)."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "edit")
    require_own(actor, request)
    if not item_codes:
        raise ValidationError("Choose at least one aliquot.", field="items")
    present = {line.item_id for line in request.lines}
    limit = settings()["max_lines"]
    problems, added = [], []
    for text in dict.fromkeys(item_codes):
        try:
            item = find_item(session, str(text), manual=True)
        except (NotFound, ValidationError):
            problems.append(f"No aliquot {str(text)[:40]}.")
            continue
        why = ineligible_to_add(session, item)
        if why:
            problems.append(why)
        elif item.id not in present:
            line = RequestLine(request=request, item_id=item.id, status=LineStatus.REQUESTED)
            session.add(line)
            present.add(item.id)
            added.append(line)
    if problems:
        session.rollback()
        raise Conflict("Nothing was added: " + " ".join(problems[:20]), field="items")
    if len(present) > limit:
        session.rollback()
        raise Conflict(f"A request names at most {limit} aliquots.", field="items")
    for line in added:
        audit.record_created(session, line, actor=actor)
    session.commit()
    return added


def remove_item(session: Session, *, actor: User | None, code: str, item_code: str) -> None:
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "edit")
    require_own(actor, request)
    wanted = (item_code or "").strip().upper()
    line = next((x for x in request.lines if x.item.code == wanted), None)
    if line is None:
        raise NotFound(f"{wanted[:40]} is not in request {request.code}.")
    # A draft line was never more than a wish: it goes, and the audit keeps that it was there.
    audit.record_action(
        session,
        actor=actor,
        entity="aliquot_request_line",
        entity_id=line.id,
        action="remove",
        detail=f"{line.item.code} taken out of draft {request.code}",
    )
    session.delete(line)
    session.commit()


def _positive_int(value: Any, name: str, label: str, lowest: int, highest: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError(f"{label} is a whole number.", field=name) from None
    if not lowest <= number <= highest:
        raise ValidationError(f"{label} is {lowest} to {highest}.", field=name)
    return number


def add_criterion(
    session: Session,
    *,
    actor: User | None,
    code: str,
    study: str,
    material_type: str,
    timepoints: str | Sequence[str] = "",
    per_subject: Any = 1,
    min_quantity: Any = None,
    max_thaws: Any = None,
    site: str = "",
) -> RequestCriterion:
    """ "``per_subject`` aliquots of this type per subject at these timepoints of the study"."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "edit")
    require_own(actor, request)
    study = (study or "").strip()
    if not study or len(study) > 120:
        raise ValidationError("Name the study (1 to 120 characters).", field="study")
    try:
        material = MaterialType(str(material_type).strip().lower())
    except ValueError:
        raise ValidationError("Choose a material type.", field="material_type") from None
    if isinstance(timepoints, str):
        timepoints = timepoints.replace(";", ",").split(",")
    labels = [t.strip().upper() for t in timepoints if t and t.strip()]
    if any(len(t) > 16 or not t.replace("-", "").isalnum() for t in labels):
        raise ValidationError("Timepoints are labels such as D0, D7, M3.", field="timepoints")
    quantity = None
    if min_quantity not in (None, ""):
        try:
            quantity = Decimal(str(min_quantity).strip())
        except ArithmeticError:
            raise ValidationError(
                "The minimum quantity is a number.", field="min_quantity"
            ) from None
        if not quantity.is_finite() or quantity < 0 or quantity > 10**6:
            raise ValidationError("The minimum quantity is a number.", field="min_quantity")
    thaws = None
    if max_thaws not in (None, ""):
        thaws = _positive_int(max_thaws, "max_thaws", "Most thaws", 0, 100)
    site_code = (site or "").strip().upper()
    if len(site_code) > 16:
        raise ValidationError("No such site.", field="site")
    criterion = RequestCriterion(
        request=request,
        study=study,
        material_type=material,
        timepoints=",".join(dict.fromkeys(labels)),
        per_subject=_positive_int(per_subject, "per_subject", "Aliquots per subject", 1, 100),
        min_quantity=quantity,
        max_thaws=thaws,
        site_code=site_code,
    )
    session.add(criterion)
    audit.record_created(session, criterion, actor=actor)
    session.commit()
    return criterion


def remove_criterion(session: Session, *, actor: User | None, code: str, criterion_id: int) -> None:
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "edit")
    require_own(actor, request)
    criterion = next((c for c in request.criteria if c.id == criterion_id), None)
    if criterion is None:
        raise NotFound("No such criterion in this request.")
    audit.record_action(
        session,
        actor=actor,
        entity="aliquot_request_criterion",
        entity_id=criterion.id,
        action="remove",
        detail=f"criterion taken out of draft {request.code}",
    )
    session.delete(criterion)
    session.commit()


def _resolve_criteria(session: Session, request: AliquotRequest) -> list[RequestLine]:
    """Turn the criteria into lines (returned, not yet flushed); write down what is short."""
    from lims.requests import search

    chosen = {line.item_id for line in request.lines}
    made = []
    for criterion in request.criteria:
        found = search.resolve_criterion(
            session,
            study=criterion.study,
            material_type=criterion.material_type,
            timepoints=[t for t in criterion.timepoints.split(",") if t],
            per_subject=criterion.per_subject,
            min_quantity=criterion.min_quantity,
            max_thaws=criterion.max_thaws,
            site=criterion.site_code or None,
            exclude_item_ids=chosen,
            genetic=request.genetic,
        )
        for item_id in found.items:
            if item_id not in chosen:
                line = RequestLine(
                    request=request,
                    item_id=item_id,
                    criterion_id=criterion.id,
                    status=LineStatus.REQUESTED,
                )
                session.add(line)
                made.append(line)
                chosen.add(item_id)
        criterion.shortfall = "\n".join(found.shortfall)
    return made


def submit(session: Session, *, actor: User | None, code: str) -> list[AliquotRequest]:
    """Send the draft for review. Criteria become aliquots now. Material kept at several sites
    makes one request per site (each site's biobank reviews, picks and sends its own part);
    the first returned is the draft itself."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "submit")
    require_own(actor, request)
    missing = [TEXT_FIELDS[name][0] for name in REQUIRED_TO_SUBMIT if not getattr(request, name)]
    if request.external:
        missing += [
            TEXT_FIELDS[name][0]
            for name in ("recipient_institution", "mta_ref")
            if not getattr(request, name)
        ]
    if missing:
        raise ValidationError("Fill in before submitting: " + ", ".join(missing) + ".")
    if not request.lines and not request.criteria:
        raise ValidationError("Choose aliquots or give criteria before submitting.", field="items")
    resolved = _resolve_criteria(session, request)
    session.flush()
    for line in resolved:
        audit.record_created(session, line, actor=actor, reason="resolved from a criterion")
    session.refresh(request, ["lines"])
    wanted = [line for line in request.lines if line.status is LineStatus.REQUESTED]
    if not wanted:
        session.rollback()
        raise Conflict("No available aliquot is left in the request; nothing was submitted.")
    if len(wanted) > settings()["max_lines"]:
        session.rollback()
        raise Conflict(f"A request names at most {settings()['max_lines']} aliquots.")
    by_site: dict[int, list[RequestLine]] = defaultdict(list)
    for line in wanted:
        by_site[line.item.site_id].append(line)
    sites = sorted(by_site, key=lambda site_id: (-len(by_site[site_id]), site_id))
    now = utcnow()
    made = [request]
    request.site_id = sites[0]
    request.submitted_at = now
    set_state(session, request, R.SUBMITTED, actor)
    for site_id in sites[1:]:
        year = now.year
        number = numbering.next_value(session, f"request:{year}")
        sibling = AliquotRequest(
            code=f"REQ-{year}-{number:05d}",
            state=R.SUBMITTED,
            researcher_id=actor.id,
            site_id=site_id,
            submitted_at=now,
            **{name: getattr(request, name) for name in (*TEXT_FIELDS, "external", "genetic")},
            delivery=request.delivery,
        )
        session.add(sibling)
        audit.record_created(
            session, sibling, actor=actor, reason=f"the part of {request.code} kept at this site"
        )  # flushes: the sibling has its id
        for line in by_site[site_id]:
            line.request_id = sibling.id
        record_lines(
            session,
            by_site[site_id],
            actor=actor,
            action="split",
            reason=f"kept at another site: moved to {sibling.code}",
        )
        made.append(sibling)
    session.flush()
    for each in made:
        session.expire(each, ["lines"])  # the lines moved by their request_id
    for each in made:
        tell(
            session,
            managers_of(session, each.site_id),
            kind="submitted",
            request=each,
            message=f"Request {each.code} was submitted: "
            f"{sum(x.status is LineStatus.REQUESTED for x in each.lines)} aliquots for "
            f'"{each.title[:80]}".',
        )
        studies = committee_needed(session, each)
        if studies:
            members = _committee_members(session, studies)
            tell(
                session,
                members,
                kind="committee",
                request=each,
                message=f"Request {each.code} needs the access committee's decision "
                f"({', '.join(sorted(studies))}).",
            )
    session.commit()
    mail_after_commit(session)
    return made


def _committee_members(session: Session, studies: Iterable[str]) -> list[User]:
    names = {name for study in studies for name in settings()["access_committee"].get(study, [])}
    if not names:
        return []
    return list(session.scalars(select(User).where(User.username.in_(sorted(names)))))


def lock_items(session: Session, item_ids: Sequence[int]) -> list[Item]:
    """Lock the tubes in one order (by id), so two approvals never deadlock, and read them
    as they are now (after whatever the other approval committed)."""
    if not item_ids:
        return []
    return list(
        session.scalars(
            select(Item)
            .where(Item.id.in_(sorted(set(item_ids))))
            .order_by(Item.id)
            .with_for_update(of=Item)
            .execution_options(populate_existing=True)
        )
    )


def record_lines(
    session: Session,
    lines: Iterable[RequestLine],
    *,
    actor: User | None,
    action: str,
    reason: str | None = None,
) -> None:
    """The audit rows of the lines' changes, chained in one go (call before any query)."""
    changed = [(line, audit.pending_changes(line)) for line in lines]
    audit.record_changes_many(session, changed, actor=actor, action=action, reason=reason)


# -- cancelling and withdrawing ---------------------------------------------------------------


def _release_lines(
    session: Session, actor: User, lines: Iterable[RequestLine], reason: str
) -> list[RequestLine]:
    """Take these lines off their request: reserved tubes go back to stored where they stand;
    a picked tube is left to be put back into a box (the pick list says so)."""
    pulled = [x for x in lines if x.status in {LineStatus.REQUESTED, *TO_PICK, *TRAVELLING}]
    reserved = [x.item for x in pulled if x.status in TO_PICK and x.item.state is State.RESERVED]
    if reserved:
        perform_many(
            session,
            actor=actor,
            items=reserved,
            action=Action.UNRESERVE,
            reason=reason,
            internal=True,
        )
    for line in pulled:
        line.status = LineStatus.WITHDRAWN
        line.reason = reason
    record_lines(session, pulled, actor=actor, action="withdraw", reason=reason)
    return pulled


def cancel(session: Session, *, actor: User | None, code: str, reason: str) -> AliquotRequest:
    """The researcher calls the request off before picking began; reserved tubes are freed."""
    request = get_request(session, actor, code, for_update=True)
    actor = check_step(session, actor, request, "cancel")
    require_own(actor, request)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why the request is cancelled.", field="reason")
    if len(reason) > 500:
        raise ValidationError("The reason is at most 500 characters.", field="reason")
    lock_items(session, [line.item_id for line in request.lines])
    _release_lines(session, actor, request.lines, f"request cancelled: {reason}")
    was_submitted = request.state is not R.DRAFT
    request.closed_at = utcnow()
    set_state(session, request, R.CANCELLED, actor, reason)
    if was_submitted:
        tell(
            session,
            managers_of(session, request.site_id),
            kind="cancelled",
            request=request,
            message=f"Request {request.code} was cancelled by the researcher.",
        )
    session.commit()
    mail_after_commit(session)
    return request


def lock_for_withdrawal(session: Session, patient_id: int) -> None:
    """Lock the open requests that hold the patient's tubes, then the tubes, each in id order
    (the order of the request steps), ahead of a consent withdrawal."""
    tubes = (
        select(Item.id)
        .join(Episode, Item.episode_id == Episode.id)
        .where(Episode.patient_id == patient_id)
    )
    session.execute(
        select(AliquotRequest.id)
        .where(
            AliquotRequest.state.in_(list(OPEN_STATES)),
            AliquotRequest.id.in_(
                select(RequestLine.request_id).where(RequestLine.item_id.in_(tubes))
            ),
        )
        .order_by(AliquotRequest.id)
        .with_for_update(of=AliquotRequest)
    ).all()
    lock_items(session, list(session.scalars(tubes)))


def pull_withdrawn_consent(
    session: Session, *, actor: User | None, patient_id: int, reason: str
) -> list[RequestLine]:
    """Consent withdrawn: the patient's tubes leave every open request (part of the caller's
    transaction). The researchers and the managers concerned are told, without naming anyone."""
    lines = list(
        session.scalars(
            select(RequestLine)
            .join(Item, RequestLine.item_id == Item.id)
            .join(Episode, Item.episode_id == Episode.id)
            .join(AliquotRequest, RequestLine.request_id == AliquotRequest.id)
            .where(
                Episode.patient_id == patient_id,
                AliquotRequest.state.in_(list(OPEN_STATES - {R.HANDED_OVER, R.SHIPPED})),
                RequestLine.status.in_(
                    [LineStatus.REQUESTED, LineStatus.APPROVED, LineStatus.PICKED]
                ),
            )
            .order_by(RequestLine.id)
        )
    )
    if not lines:
        return []
    by_request: dict[int, list[RequestLine]] = defaultdict(list)
    for line in lines:
        by_request[line.request_id].append(line)
    pulled: list[RequestLine] = []
    for request_lines in by_request.values():
        request = request_lines[0].request
        if request.state is R.DRAFT:
            for line in request_lines:
                line.status = LineStatus.WITHDRAWN
                line.reason = "consent withdrawn"
                audit.record_changes(session, line, actor=actor, action="withdraw", reason=reason)
            continue
        pulled += _release_lines(session, actor, request_lines, "consent withdrawn")
        codes = ", ".join(line.item.code for line in request_lines)
        message = (
            f"Request {request.code}: {len(request_lines)} aliquot(s) withdrawn because the "
            f"donor withdrew consent ({codes}). Picked tubes go back into storage."
        )
        tell(
            session,
            [request.researcher, *managers_of(session, request.site_id)],
            kind="withdrawn",
            request=request,
            message=message[:500],
        )
        after_lines_change(session, request, actor)
    return pulled


def after_lines_change(session: Session, request: AliquotRequest, actor: User | None) -> None:
    """After a pick, a short pick or a withdrawal: picking has begun; once nothing is left to
    pick the researcher is told the material is ready, or the request closes when nothing is
    left to send."""
    if request.state not in {R.APPROVED, R.PARTLY_APPROVED, R.PICKING}:
        return
    if request.state is not R.PICKING and any(x.status in TRAVELLING for x in request.lines):
        set_state(session, request, R.PICKING, actor)
    if any(x.status in TO_PICK for x in request.lines):
        return
    if not any(x.status in TRAVELLING for x in request.lines):
        close_if_nothing_left(session, request, actor)
        return
    if request.ready_at is None:
        request.ready_at = utcnow()
        audit.record_changes(session, request, actor=actor, action="ready")
        count = sum(1 for x in request.lines if x.status in TRAVELLING)
        how = "to collect" if request.delivery is Delivery.PICK_UP else "to ship"
        tell(
            session,
            [request.researcher],
            kind="ready",
            request=request,
            message=f"Request {request.code} is ready {how}: {count} aliquots.",
        )


def close_if_nothing_left(session: Session, request: AliquotRequest, actor: User | None) -> None:
    """An approved request whose every line fell away has nothing to send: it closes."""
    if request.state not in {R.APPROVED, R.PARTLY_APPROVED, R.PICKING}:
        return
    if any(line.status in {*TO_PICK, *TRAVELLING} for line in request.lines):
        return
    request.closed_at = utcnow()
    set_state(session, request, R.CLOSED, actor, "nothing left to send")


def counts(request: AliquotRequest) -> dict[LineStatus, int]:
    tally: dict[LineStatus, int] = {status: 0 for status in LineStatus}
    for line in request.lines:
        tally[line.status] += 1
    return tally


def open_requests_count(session: Session, actor: User) -> int:
    """How many requests wait on this person's desk (for the home page)."""
    if actor.role is Role.MANAGER:
        states = [R.SUBMITTED, R.UNDER_REVIEW]
    elif actor.role is Role.TECHNICIAN:
        states = [R.APPROVED, R.PARTLY_APPROVED, R.PICKING]
    else:
        return 0
    return session.scalar(
        select(func.count())
        .select_from(AliquotRequest)
        .where(AliquotRequest.site_id == actor.site_id, AliquotRequest.state.in_(states))
    )
