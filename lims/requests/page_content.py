"""What the request pages show: the lists sorted for the person, the lines, reviews and history
of a request, and the steps offered to the person looking. Read-only; the views render it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select

from lims.audit.models import AuditEntry, ESignature
from lims.auth.models import Role, User
from lims.history.services import plain_number
from lims.requests import manifest, services
from lims.requests import search as biobank
from lims.requests.domain import OPEN_STATES, STEPS
from lims.requests.models import AliquotRequest, LineStatus, RequestState, ReviewStage
from lims.storage.models import Box
from lims.storage.services import location_of

R = RequestState


# -- what the pages show ----------------------------------------------------------------------


def _may(actor: User, req: AliquotRequest, step: str) -> bool:
    """Whether the step table lets this role take ``step`` now (ownership and site apart)."""
    rule = STEPS[step]
    return actor.role in rule.roles and req.state in rule.from_states


def committee_to_sign(session, actor: User, req: AliquotRequest) -> list[str]:
    """The studies of ``req`` whose committee ``actor`` sits on and that have not decided."""
    mine = services.committee_studies_of(actor)
    if not mine or not _may(actor, req, "committee"):
        return []
    decided = {r.study for r in req.reviews if r.stage is ReviewStage.COMMITTEE}
    return sorted((services.committee_needed(session, req) & mine) - decided)


def _waiting_for(session, actor: User, req: AliquotRequest) -> bool:
    """Whether the next step of ``req`` is this person's."""
    if actor.role is Role.RESEARCHER and req.researcher_id == actor.id:
        if _may(actor, req, "receive"):
            return True
    elif req.site_id == actor.site_id:
        desk = {Role.MANAGER: "decide", Role.TECHNICIAN: "pick"}.get(actor.role)
        if desk and _may(actor, req, desk):
            return True
    return bool(committee_to_sign(session, actor, req))


@dataclass(frozen=True)
class Lists:
    drafts: list[AliquotRequest]
    waiting: list[AliquotRequest]
    open: list[AliquotRequest]
    finished: list[AliquotRequest]


def sort_requests(session, actor: User, requests: list[AliquotRequest]) -> Lists:
    lists = Lists([], [], [], [])
    for req in requests:
        if req.state is R.DRAFT:
            lists.drafts.append(req)
        elif _waiting_for(session, actor, req):
            lists.waiting.append(req)
        elif req.state in OPEN_STATES:
            lists.open.append(req)
        else:
            lists.finished.append(req)
    return lists


@dataclass(frozen=True)
class Group:
    """An expanded search group: one subject at one timepoint, its available aliquots."""

    pseudonym: str
    timepoint: str | None
    rows: list[biobank.AliquotRow]


def choose(rows: list[biobank.AliquotRow], material: str, count: int, taken: set[str]) -> list[str]:
    """Up to ``count`` codes of this type not in the cart yet, as a criterion would choose them."""
    fitting = [r for r in rows if r.material_type.value == material and r.code not in taken]
    fitting.sort(key=lambda r: (r.thaw_count, -r.quantity, r.code))
    return [r.code for r in fitting[:count]]


@dataclass(frozen=True)
class LineRow:
    code: str
    pseudonym: str
    timepoint: str | None
    day: int | None
    material: str
    quantity: str
    unit: str
    thaws: int
    site: str
    status: LineStatus
    reason: str
    #: Where the tube is (staff of the request's site only; None for everyone else).
    location: str | None


@dataclass(frozen=True)
class ReviewRow:
    stage: str
    study: str
    decision: str
    signer: str
    at: datetime
    comment: str


@dataclass(frozen=True)
class Event:
    at: datetime
    who: str
    old: str | None
    new: str
    reason: str


@dataclass(frozen=True)
class Offers:
    """What this person may do on the page now, from the step table (lims.requests.domain)."""

    edit: bool
    cancel: bool
    receive: bool
    review: bool
    pick: bool
    dispatch: bool
    committee: list[str]
    manifest: bool


def _state_label(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return RequestState(value).label
    except ValueError:
        return value


def _line_rows(session, req: AliquotRequest, staff: bool) -> list[LineRow]:
    rows = []
    for line in req.lines:
        item = line.item
        location = None
        if staff:
            box = session.get(Box, item.box_id) if item.box_id else None
            location = location_of(box, item.position) if box else item.location
        rows.append(
            LineRow(
                code=item.code,
                pseudonym=item.episode.patient.pseudonym,
                timepoint=item.timepoint,
                day=item.timepoint_day,
                material=item.material_type.label,
                quantity=plain_number(Decimal(item.quantity)),
                unit=item.unit,
                thaws=item.thaw_count,
                site=item.site.code,
                status=line.status,
                reason=line.reason,
                location=location,
            )
        )
    return rows


def _names(session, ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


def _reviews(session, req: AliquotRequest) -> list[ReviewRow]:
    ids = [r.signature_id for r in req.reviews]
    signatures = (
        {s.id: s for s in session.scalars(select(ESignature).where(ESignature.id.in_(ids)))}
        if ids
        else {}
    )
    rows = []
    for review in req.reviews:
        signature = signatures.get(review.signature_id)
        rows.append(
            ReviewRow(
                stage=review.stage.label,
                study=review.study,
                decision=review.decision.label,
                signer=signature.printed_name if signature else review.reviewer.full_name,
                at=signature.signed_at if signature else review.at,
                comment=review.comment,
            )
        )
    return rows


def _history(session, req: AliquotRequest) -> list[Event]:
    """The request's steps from its audit rows: its creation and every change of state."""
    entries = list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity == AliquotRequest.__tablename__,
                AuditEntry.entity_id == str(req.id),
                or_(
                    AuditEntry.action == "create",
                    AuditEntry.action.startswith("request_", autoescape=True),
                ),
            )
            .order_by(AuditEntry.seq)
        )
    )
    names = _names(session, {entry.user_id for entry in entries})
    events = []
    for entry in entries:
        if entry.action == "create":
            old, new = None, json.loads(entry.new_value or "{}").get("state", R.DRAFT.value)
        elif entry.field == "state":
            old, new = entry.old_value, entry.new_value
        else:
            continue
        events.append(
            Event(
                at=entry.at,
                who=names.get(entry.user_id, entry.actor),
                old=_state_label(old),
                new=_state_label(new) or "",
                reason=entry.reason or "",
            )
        )
    return events


@dataclass(frozen=True)
class RequestView:
    """The request page's content for one person."""

    own: bool
    staff: bool
    lines: list[LineRow]
    counts: dict[LineStatus, int]
    reviews: list[ReviewRow]
    history: list[Event]
    offers: Offers
    names: dict[int, str]

    @classmethod
    def of(cls, session, actor: User, req: AliquotRequest) -> RequestView:
        own = actor.role is Role.RESEARCHER and req.researcher_id == actor.id
        staff = actor.role in {Role.MANAGER, Role.TECHNICIAN} and req.site_id == actor.site_id
        offers = Offers(
            edit=own and _may(actor, req, "edit"),
            cancel=own and _may(actor, req, "cancel"),
            receive=(own or staff) and _may(actor, req, "receive"),
            review=staff and (_may(actor, req, "decide") or _may(actor, req, "start_review")),
            pick=staff and _may(actor, req, "pick"),
            dispatch=staff and _may(actor, req, "dispatch"),
            committee=committee_to_sign(session, actor, req),
            manifest=any(line.status in manifest.SENT_STATUSES for line in req.lines),
        )
        return cls(
            own=own,
            staff=staff,
            lines=_line_rows(session, req, staff),
            counts=services.counts(req),
            reviews=_reviews(session, req),
            history=_history(session, req),
            offers=offers,
            names=_names(session, {req.dispatched_by_id, req.received_by_id}),
        )


