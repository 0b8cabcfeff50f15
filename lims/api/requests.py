"""The JSON API of aliquot requests: search, the researcher's draft, review, picking, dispatch,
receipt, the manifest's rows, and the inbox.

Routes on the blueprint of :mod:`lims.api.views` (which imports this module at its end). Each
handler parses its body, calls one service of :mod:`lims.requests` and answers with the JSON of
:mod:`lims.api.request_schemas`. The services check the role, the site and the state again and
answer an invisible request with 404, whoever asks. Researchers never receive a storage
location, and nothing here reads a patient's identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import jsonify, request, url_for
from sqlalchemy.orm import Session

from lims import db
from lims.api import request_json as answers
from lims.api import request_schemas as schemas
from lims.api.payload import refuse_nul
from lims.api.views import actor, bp, created
from lims.auth.access import allow, allow_all_roles
from lims.auth.models import Role
from lims.errors import DomainError, Forbidden, NotFound, ValidationError
from lims.requests import fulfilment, manifest, notify, review, search, services
from lims.requests.models import AliquotRequest, RequestState
from lims.requests.search import SearchFilters

#: Who works with requests at all (committee members excepted: see ANYONE).
REQUEST_ROLES = (Role.RESEARCHER, Role.MANAGER, Role.TECHNICIAN)
BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: An access committee member may hold any role; the services check the membership.
ANYONE = tuple(Role)


@contextmanager
def naming(**keys: str) -> Iterator[None]:
    """A refusal about a service's key names the body's or query's: ``naming(code="scan")``."""
    try:
        yield
    except DomainError as exc:
        if exc.field in keys:
            exc.field = keys[exc.field]
        raise


def answer(session: Session, found: AliquotRequest) -> Any:
    return jsonify(answers.request_json(session, found, actor()))


def query_text(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None:
        refuse_nul(value, name)
    return value or None


def search_filters() -> SearchFilters:
    for name, value in request.args.items(multi=True):
        refuse_nul(value, name)
    return SearchFilters.from_mapping(request.args)


# -- searching ---------------------------------------------------------------------------------


@bp.get("/requests/search")
@allow(Role.RESEARCHER)
def search_aliquots():
    filters = search_filters()
    result = search.search(
        db.session(),
        filters,
        page=request.args.get("page") or 1,
        per_page=request.args.get("per_page") or 50,
    )

    def aliquots_url(group: search.SearchGroup) -> str:
        where = {**filters.given(), "subject": group.pseudonym}
        if group.timepoint is not None:
            where["timepoint"] = group.timepoint
        return url_for("api.group_aliquots", **where)

    return jsonify(answers.search_json(result, filters, aliquots_url))


@bp.get("/requests/search/aliquots")
@allow(Role.RESEARCHER)
def group_aliquots():
    filters = search_filters()
    subject = query_text("subject")
    if subject is None:
        raise ValidationError("Name the subject (their pseudonym).", field="subject")
    with naming(pseudonym="subject"):
        rows = search.group_aliquots(db.session(), filters, subject, filters.timepoint)
    return jsonify(
        subject=subject.strip().upper(),
        timepoint=filters.timepoint,
        aliquots=[answers.available_json(row) for row in rows],
    )


# -- the researcher's draft --------------------------------------------------------------------


@bp.get("/requests")
@allow(*REQUEST_ROLES)
def list_requests():
    state = query_text("state")
    states = None
    if state is not None:
        if state not in {each.value for each in RequestState}:
            raise ValidationError(f"'state' is one of: {', '.join(RequestState)}.", field="state")
        states = [RequestState(state)]
    found = services.requests_for(db.session(), actor(), states=states)
    return jsonify(requests=[answers.summary_json(each) for each in found])


@bp.post("/requests")
@allow(Role.RESEARCHER)
def create_request():
    data = schemas.REQUEST_DRAFT.parse()
    session = db.session()
    draft = services.create_request(session, actor=actor(), **data)
    return created(
        answers.request_json(session, draft, actor()),
        url_for("api.get_request", code=draft.code),
    )


@bp.get("/requests/<code>")
@allow(*ANYONE)
def get_request(code: str):
    session = db.session()
    return answer(session, services.get_request(session, actor(), code))


@bp.patch("/requests/<code>")
@allow(Role.RESEARCHER)
def update_request(code: str):
    data = schemas.REQUEST_UPDATE.parse()
    session = db.session()
    return answer(session, services.update_request(session, actor=actor(), code=code, **data))


@bp.post("/requests/<code>/items")
@allow(Role.RESEARCHER)
def add_request_items(code: str):
    data = schemas.REQUEST_ITEMS.parse()
    session = db.session()
    services.add_items(session, actor=actor(), code=code, item_codes=data["items"])
    return answer(session, services.get_request(session, actor(), code))


@bp.delete("/requests/<code>/items/<item>")
@allow(Role.RESEARCHER)
def remove_request_item(code: str, item: str):
    session = db.session()
    services.remove_item(session, actor=actor(), code=code, item_code=item)
    return answer(session, services.get_request(session, actor(), code))


@bp.post("/requests/<code>/criteria")
@allow(Role.RESEARCHER)
def add_request_criterion(code: str):
    data = schemas.CRITERION.parse()
    criterion = services.add_criterion(
        db.session(),
        actor=actor(),
        code=code,
        study=data["study"],
        material_type=data["material_type"],
        timepoints=data["timepoints"] or (),
        per_subject=1 if data["per_subject"] is None else data["per_subject"],
        min_quantity=data["min_quantity"],
        max_thaws=data["max_thaws"],
        site=data["site"] or "",
    )
    return created(answers.criterion_json(criterion), url_for("api.get_request", code=code))


@bp.delete("/requests/<code>/criteria/<int:criterion_id>")
@allow(Role.RESEARCHER)
def remove_request_criterion(code: str, criterion_id: int):
    session = db.session()
    services.remove_criterion(session, actor=actor(), code=code, criterion_id=criterion_id)
    return answer(session, services.get_request(session, actor(), code))


@bp.post("/requests/<code>/submit")
@allow(Role.RESEARCHER)
def submit_request(code: str):
    schemas.SUBMISSION.parse()
    session = db.session()
    made = services.submit(session, actor=actor(), code=code)
    return jsonify(requests=[answers.request_json(session, each, actor()) for each in made])


@bp.post("/requests/<code>/cancel")
@allow(Role.RESEARCHER)
def cancel_request(code: str):
    data = schemas.CANCELLATION.parse()
    session = db.session()
    return answer(
        session, services.cancel(session, actor=actor(), code=code, reason=data["reason"])
    )


# -- review ------------------------------------------------------------------------------------


@bp.post("/requests/<code>/review/start")
@allow(Role.MANAGER)
def start_review(code: str):
    schemas.REVIEW_START.parse()
    session = db.session()
    return answer(session, review.start_review(session, actor=actor(), code=code))


@bp.get("/requests/<code>/eligibility")
@allow(*ANYONE)
def request_eligibility(code: str):
    session = db.session()
    user = actor()
    found = services.get_request(session, user, code)
    site_manager = user.role is Role.MANAGER and user.site_id == found.site_id
    on_committee = services.committee_studies_of(user) & services.committee_needed(session, found)
    if not (site_manager or on_committee):
        raise Forbidden(
            f"The eligibility of {found.code} is for the biobank managers of {found.site.code} "
            "and the access committee."
        )
    return jsonify(answers.eligibility_json(session, found))


@bp.post("/requests/<code>/opt-out-checks")
@allow(Role.MANAGER)
def record_opt_out_checks(code: str):
    data = schemas.OPT_OUT_CHECKS.parse()
    session = db.session()
    review.record_opt_out_checks(
        session, actor=actor(), code=code, registered=data["registered"], note=data["note"] or ""
    )
    return answer(session, services.get_request(session, actor(), code))


@bp.post("/requests/<code>/committee")
@allow(*ANYONE)
def committee_decision(code: str):
    data = schemas.COMMITTEE.parse()
    session = db.session()
    review.committee_decide(
        session,
        actor=actor(),
        code=code,
        study=data["study"].strip(),
        decision=data["decision"],
        password=data["password"],
        comment=data["comment"] or "",
    )
    return answer(session, services.get_request(session, actor(), code))


@bp.post("/requests/<code>/decision")
@allow(Role.MANAGER)
def decide_request(code: str):
    data = schemas.DECISION.parse()
    session = db.session()
    decided = review.decide(
        session,
        actor=actor(),
        code=code,
        decision=data["decision"],
        password=data["password"],
        comment=data["comment"] or "",
        approve=data["approve"],
    )
    return answer(session, decided)


# -- picking, dispatch, receipt ----------------------------------------------------------------


def picking_request(session: Session, code: str) -> AliquotRequest:
    """The request, for the staff of the site that picks it only."""
    found = services.get_request(session, actor(), code)
    if found.site_id != actor().site_id:
        raise Forbidden(f"Request {found.code} is picked at {found.site.code}.")
    return found


@bp.get("/requests/<code>/pick-list")
@allow(*BENCH)
def pick_list(code: str):
    session = db.session()
    found = picking_request(session, code)
    return jsonify(
        request=found.code,
        state=found.state.value,
        entries=[answers.pick_entry_json(e) for e in fulfilment.pick_list(session, found)],
        picked=answers.counts_json(found)["picked"],
    )


def pick_answer(session: Session, line) -> Any:
    found = line.request
    return jsonify(
        line=answers.line_json(session, line, answers.sees_locations(actor(), found)),
        state=found.state.value,
        to_pick=answers.counts_json(found)["approved"],
    )


@bp.post("/requests/<code>/picks")
@allow(*BENCH)
def pick_aliquot(code: str):
    data = schemas.PICK.parse()
    session = db.session()
    with naming(code="scan"):
        line = fulfilment.pick(session, actor=actor(), code=code, scan=data["scan"])
    return pick_answer(session, line)


@bp.post("/requests/<code>/short-picks")
@allow(*BENCH)
def short_pick(code: str):
    data = schemas.SHORT_PICK.parse()
    session = db.session()
    with naming(code="item"):
        line = fulfilment.short_pick(
            session,
            actor=actor(),
            code=code,
            item_code=data["item"],
            kind=data["kind"],
            reason=data["reason"],
        )
    return pick_answer(session, line)


@bp.post("/requests/<code>/dispatch")
@allow(*BENCH)
def dispatch_request(code: str):
    data = schemas.REQUEST_DISPATCH.parse()
    session = db.session()
    sent = fulfilment.dispatch(
        session,
        actor=actor(),
        code=code,
        courier=data["courier"],
        conditions=data["conditions"],
        logger_ref=data["logger_ref"] or "",
        tracking_ref=data["tracking_ref"] or "",
    )
    return answer(session, sent)


@bp.post("/requests/<code>/receipt")
@allow(*REQUEST_ROLES)
def confirm_request_receipt(code: str):
    data = schemas.REQUEST_RECEIPT.parse()
    session = db.session()
    received = fulfilment.confirm_receipt(
        session, actor=actor(), code=code, note=data["note"] or ""
    )
    return answer(session, received)


@bp.get("/requests/<code>/manifest")
@allow(*REQUEST_ROLES)
def request_manifest(code: str):
    session = db.session()
    found = services.get_request(session, actor(), code)
    return jsonify(answers.manifest_json(found, manifest.manifest_rows(session, found)))


# -- the inbox ---------------------------------------------------------------------------------


def whole_number(name: str, default: int) -> int:
    text = query_text(name)
    if text is None:
        return default
    # Digits only, and few of them: int() of a huge string is slow, and no inbox is that long.
    if not text.isascii() or not text.isdigit() or len(text) > 7:
        raise ValidationError(f"'{name}' must be a whole number from 1.", field=name)
    return int(text)


@bp.get("/notifications")
@allow_all_roles
def notifications():
    session = db.session()
    page = notify.inbox(
        session,
        actor(),
        page=whole_number("page", 1),
        per_page=whole_number("per_page", 50),
    )
    return jsonify(answers.inbox_json(page, notify.unread_count(session, actor())))


@bp.post("/notifications/<notification_id>/read")
@allow_all_roles
def read_notification(notification_id: str):
    schemas.NOTIFICATION_READ.parse()
    # The id is taken as text so that anything else is "no such notification", like a stranger's.
    if not notification_id.isascii() or not notification_id.isdigit() or len(notification_id) > 10:
        raise NotFound("There is no such notification in your inbox.")
    notification = notify.mark_read(db.session(), actor(), int(notification_id))
    code = notification.request.code if notification.request is not None else None
    return jsonify(answers.notification_json(notification, code))
