"""The biobank staff's pages of a request: the review (opt-out register checks, eligibility of
each aliquot, the manager's signed decision), the access committee's signature, the pick list
worked by scan, and the hand-over or shipment.

Each POST calls one service. A success is flashed and redirected (post/redirect/get). A refusal
re-renders the page from the database as it is after the rollback, with the service's message
as a loud banner and the status it carries: 409 for a wrong tube or an aliquot another approval
took, 422 for a wrong password or a missing field. Only pseudonyms are shown: nobody needs a
patient's identity to review, pick or send a tube.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import SelectChoice

from lims import db
from lims.auth.access import allow, user_may
from lims.auth.models import Role, User
from lims.custody.domain import State
from lims.errors import DomainError, Forbidden, NotFound, ValidationError
from lims.requests import fulfilment, notify, review, services
from lims.requests.domain import STEPS, TO_PICK, TRAVELLING
from lims.requests.models import (
    AliquotRequest,
    Decision,
    Delivery,
    LineStatus,
    RequestState,
    ReviewStage,
)
from lims.requests.staff_forms import (
    CommitteeForm,
    DecideForm,
    DispatchForm,
    OptOutForm,
    PickScanForm,
    ShortPickForm,
    StartReviewForm,
)
from lims.requests.views import bp

BENCH = (Role.TECHNICIAN, Role.MANAGER)


# -- shared ------------------------------------------------------------------------------------


def _of_my_site(session: Session, code: str) -> AliquotRequest:
    """The request, if it is served by the user's own site; otherwise it does not exist for
    them (the same answer as an unknown code, so nothing hints at another site's work)."""
    aliquot_request = services.get_request(session, current_user, code)
    if aliquot_request.site_id != current_user.site_id:
        raise NotFound(f"No request {aliquot_request.code}.")
    return aliquot_request


def _canonical(endpoint: str, code: str, aliquot_request: AliquotRequest, **args: Any):
    """A redirect to the address with the code as stored, when it was typed otherwise."""
    if request.method == "GET" and code != aliquot_request.code:
        return redirect(url_for(endpoint, code=aliquot_request.code, **args))
    return None


def _posted_step() -> str:
    return request.form.get("step", "") if request.method == "POST" else ""


def _bound(form_class: type[FlaskForm], step: str, posted: str) -> FlaskForm:
    """The form filled from the POST when it is the one posted; an empty one otherwise."""
    return form_class() if step == posted else form_class(formdata=None)


def _form_refusal(form: FlaskForm) -> ValidationError:
    messages = []
    for name, errors in form.errors.items():
        field = getattr(form, name, None)
        label = field.label.text if field is not None and field.label.text else ""
        for error in errors:
            messages.append(f"{label}: {error}" if label and name != "decision" else error)
    return ValidationError(" ".join(messages) or "The form is incomplete.")


def _run(
    session: Session, form: FlaskForm, call: Callable[[], Any]
) -> tuple[Any, DomainError | None]:
    """Validate the posted form and call the service: (its result, None) or (None, the
    refusal) with nothing written."""
    if not form.validate_on_submit():
        return None, _form_refusal(form)
    try:
        return call(), None
    except DomainError as exc:
        session.rollback()
        return None, exc


def _may(aliquot_request: AliquotRequest, step: str) -> bool:
    """Whether the page offers this step: the same table the service enforces."""
    rule = STEPS[step]
    return aliquot_request.state in rule.from_states and current_user.role in rule.roles


def _names(session: Session, ids: set[int | None]) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


def _common(aliquot_request: AliquotRequest) -> dict[str, Any]:
    return {
        "aliquot_request": aliquot_request,
        "request_url": notify.request_path(aliquot_request.code),
        "may_review": user_may("requests.review")
        and aliquot_request.site_id == current_user.site_id,
        "may_pick": user_may("requests.pick") and aliquot_request.site_id == current_user.site_id,
    }


def _render(template: str, error: DomainError | None, context: dict[str, Any]):
    status = error.status_code if error is not None else 200
    return render_template(template, error=error, **context), status


# -- review ------------------------------------------------------------------------------------


@bp.route("/requests/<code>/review", methods=["GET", "POST"], endpoint="review")
@allow(Role.MANAGER)
def review_page(code: str):
    session = db.session()
    aliquot_request = _of_my_site(session, code)
    if moved := _canonical("requests.review", code, aliquot_request):
        return moved
    code = aliquot_request.code
    posted = _posted_step()
    if posted not in ("", "start", "opt_out", "decide"):
        raise ValidationError("This form is not one of the review page's.")
    start_form = _bound(StartReviewForm, "start", posted)
    opt_out_form = _bound(OptOutForm, "opt_out", posted)
    decide_form = _bound(DecideForm, "decide", posted)
    error = None
    if posted == "start":
        _, error = _run(
            session,
            start_form,
            lambda: review.start_review(session, actor=current_user, code=code),
        )
        if error is None:
            flash(f"Request {code} is under review.", "success")
            return redirect(url_for("requests.review", code=code))
    elif posted == "opt_out":
        checks, error = _run(
            session,
            opt_out_form,
            lambda: review.record_opt_out_checks(
                session,
                actor=current_user,
                code=code,
                registered=opt_out_form.registered.data or [],
                note=opt_out_form.note.data or "",
            ),
        )
        if error is None:
            found = sum(1 for check in checks if check.registered)
            flash(
                f"Opt-out register check recorded for {len(checks)} patient(s); "
                f"{found} found in the register.",
                "success" if not found else "error",
            )
            return redirect(url_for("requests.review", code=code))
    elif posted == "decide":
        decision = decide_form.decision.data
        _, error = _run(
            session,
            decide_form,
            lambda: review.decide(
                session,
                actor=current_user,
                code=code,
                decision=decision,
                password=decide_form.password.data,
                comment=decide_form.comment.data or "",
                approve=(decide_form.approve.data or [])
                if decision == Decision.APPROVED.value
                else None,
            ),
        )
        if error is None:
            decided = services.get_request(session, current_user, code)
            if decided.state is RequestState.REJECTED:
                flash(f"Request {code} rejected; the researcher is told why.", "success")
            else:
                count = sum(1 for x in decided.lines if x.status is LineStatus.APPROVED)
                flash(
                    f"Request {code} {decided.state.label}: {count} aliquot(s) reserved; "
                    "the technicians have a pick list.",
                    "success",
                )
            return redirect(url_for("requests.review", code=code))
    if error is not None:
        # What the refusal left: the request as it is now, with its fresh eligibility.
        aliquot_request = _of_my_site(session, code)
    return _render(
        "requests/review.html",
        error,
        _review_context(session, aliquot_request, start_form, opt_out_form, decide_form, posted),
    )


def _review_context(
    session: Session,
    aliquot_request: AliquotRequest,
    start_form: FlaskForm,
    opt_out_form: OptOutForm,
    decide_form: DecideForm,
    posted: str,
) -> dict[str, Any]:
    patients = review.patients_of(session, aliquot_request)
    checks = review.latest_opt_out_checks(session, [p.id for p in patients])
    line_checks = review.check_lines(session, aliquot_request)
    eligible = [c.line.item.code for c in line_checks if c.eligible]
    if posted == "decide":
        # Keep the manager's choice, less what has stopped being eligible meanwhile.
        chosen = set(decide_form.approve.data or [])
        decide_form.approve.data = [code for code in eligible if code in chosen]
    else:
        decide_form.approve.data = eligible
    decide_form.approve.choices = [SelectChoice(c.line.item.code) for c in line_checks]
    if posted != "opt_out":
        opt_out_form.registered.data = [
            p.pseudonym for p in patients if p.id in checks and checks[p.id].registered
        ]
    opt_out_form.registered.choices = [SelectChoice(p.pseudonym) for p in patients]
    needed = sorted(services.committee_needed(session, aliquot_request))
    decisions = {r.study: r for r in aliquot_request.reviews if r.stage is ReviewStage.COMMITTEE}
    valid_days = int(services.settings()["opt_out_check_valid_days"])
    oldest = db.utcnow() - timedelta(days=valid_days)
    return {
        **_common(aliquot_request),
        "start_form": start_form,
        "opt_out_form": opt_out_form,
        "decide_form": decide_form,
        "may_start": _may(aliquot_request, "start_review"),
        "may_record": _may(aliquot_request, "record_opt_out"),
        "may_decide": _may(aliquot_request, "decide"),
        "patients": patients,
        "checks": checks,
        "stale": {patient_id for patient_id, check in checks.items() if check.checked_at < oldest},
        "valid_days": valid_days,
        "line_checks": line_checks,
        "eligible_count": len(eligible),
        "other_lines": [x for x in aliquot_request.lines if x.status is not LineStatus.REQUESTED],
        "needed": needed,
        "committee_decisions": decisions,
        "waiting": [study for study in needed if study not in decisions],
        "manager_reviews": [r for r in aliquot_request.reviews if r.stage is ReviewStage.MANAGER],
        "names": _names(session, {c.checked_by_id for c in checks.values()}),
    }


# -- the access committee ----------------------------------------------------------------------


@bp.route("/requests/<code>/committee/<path:study>", methods=["GET", "POST"])
@allow(*Role)
def committee(code: str, study: str):
    """Any role may sit on a study's access committee (the configuration says who does); the
    services refuse everyone else."""
    session = db.session()
    aliquot_request = services.get_request(session, current_user, code)
    if moved := _canonical("requests.committee", code, aliquot_request, study=study):
        return moved
    code = aliquot_request.code
    if study not in services.committee_needed(session, aliquot_request):
        raise NotFound(f"Request {code} needs no access committee decision for {study[:120]}.")
    if study not in services.committee_studies_of(current_user):
        raise Forbidden(f"You are not on the access committee of {study}.")
    form = CommitteeForm()
    error = None
    if request.method == "POST":
        decision = form.decision.data
        _, error = _run(
            session,
            form,
            lambda: review.committee_decide(
                session,
                actor=current_user,
                code=code,
                study=study,
                decision=decision,
                password=form.password.data,
                comment=form.comment.data or "",
            ),
        )
        if error is None:
            flash(
                f"Your committee's decision on {code} for {study} is signed: {decision}.",
                "success",
            )
            return redirect(url_for("requests.committee", code=code, study=study))
        aliquot_request = services.get_request(session, current_user, code)
    lines = [x for x in aliquot_request.lines if x.item.episode.protocol == study]
    summary = Counter(
        (
            x.item.episode.patient.pseudonym,
            x.item.timepoint or "",
            x.item.timepoint_day,
            x.item.material_type.label,
        )
        for x in lines
    )
    decided = next(
        (
            r
            for r in aliquot_request.reviews
            if r.stage is ReviewStage.COMMITTEE and r.study == study
        ),
        None,
    )
    return _render(
        "requests/committee.html",
        error,
        {
            "aliquot_request": aliquot_request,
            "study": study,
            "form": form,
            "summary": sorted(summary.items(), key=lambda kv: (kv[0][0], kv[0][2] or 0, kv[0])),
            "line_count": len(lines),
            "subject_count": len({key[0] for key in summary}),
            "criteria": [c for c in aliquot_request.criteria if c.study == study],
            "decided": decided,
            "may_sign": decided is None and _may(aliquot_request, "committee"),
            "own": aliquot_request.researcher_id == current_user.id,
        },
    )


# -- picking -----------------------------------------------------------------------------------


@bp.route("/requests/<code>/pick", methods=["GET", "POST"])
@allow(*BENCH)
def pick(code: str):
    session = db.session()
    aliquot_request = _of_my_site(session, code)
    if moved := _canonical("requests.pick", code, aliquot_request):
        return moved
    code = aliquot_request.code
    posted = _posted_step()
    if posted not in ("", "scan", "short"):
        raise ValidationError("This form is not one of the pick page's.")
    scan_form = _bound(PickScanForm, "scan", posted)
    short_form = _bound(ShortPickForm, "short", posted)
    error = None
    if posted == "scan":
        line, error = _run(
            session,
            scan_form,
            lambda: fulfilment.pick(
                session, actor=current_user, code=code, scan=scan_form.scan.data
            ),
        )
        if error is None:
            return _after_pick(session, code, f"✓ {line.item.code} picked.", line.item.code)
        scan_form.scan.data = ""  # the banner names the tube; the field waits for the next
    elif posted == "short":
        line, error = _run(
            session,
            short_form,
            lambda: fulfilment.short_pick(
                session,
                actor=current_user,
                code=code,
                item_code=short_form.item_code.data,
                kind=short_form.kind.data,
                reason=short_form.reason.data,
            ),
        )
        if error is None:
            return _after_pick(
                session,
                code,
                f"{line.item.code} recorded short ({line.short_kind.label}): {line.reason}",
                None,
            )
    if error is not None:
        aliquot_request = _of_my_site(session, code)
    entries = fulfilment.pick_list(session, aliquot_request)
    lines = aliquot_request.lines
    picked = [x for x in lines if x.status is LineStatus.PICKED]
    return _render(
        "requests/pick.html",
        error,
        {
            **_common(aliquot_request),
            "scan_form": scan_form,
            "short_form": short_form,
            "entries": entries,
            "picked": picked,
            "short": [x for x in lines if x.status is LineStatus.SHORT],
            "put_back": [
                x
                for x in lines
                if x.status is LineStatus.WITHDRAWN and x.item.state is State.PICKED
            ],
            "withdrawn": [
                x
                for x in lines
                if x.status is LineStatus.WITHDRAWN and x.item.state is not State.PICKED
            ],
            "may_pick_now": _may(aliquot_request, "pick") and bool(entries),
            "ready": _may(aliquot_request, "dispatch") and not entries and bool(picked),
            "last": request.args.get("last", "")[:40],
            "printed_at": db.utcnow(),
            "names": _names(session, {x.picked_by_id for x in picked}),
        },
    )


def _after_pick(session: Session, code: str, message: str, last: str | None):
    flash(message, "success")
    aliquot_request = services.get_request(session, current_user, code)
    left = sum(1 for x in aliquot_request.lines if x.status in TO_PICK)
    if left:
        flash(f"{left} tube(s) left on the pick list.", "info")
    elif any(x.status in TRAVELLING for x in aliquot_request.lines):
        flash("Everything is picked or recorded short: hand it over or ship it.", "info")
    else:
        flash(f"Nothing is left to send: request {code} is {aliquot_request.state.label}.", "info")
    args = {"last": last} if last else {}
    return redirect(url_for("requests.pick", code=code, **args))


# -- dispatch ----------------------------------------------------------------------------------


@bp.route("/requests/<code>/dispatch", methods=["GET", "POST"])
@allow(*BENCH)
def dispatch(code: str):
    session = db.session()
    aliquot_request = _of_my_site(session, code)
    if moved := _canonical("requests.dispatch", code, aliquot_request):
        return moved
    code = aliquot_request.code
    form = DispatchForm()
    error = None
    if request.method == "POST":
        done, error = _run(
            session,
            form,
            lambda: fulfilment.dispatch(
                session,
                actor=current_user,
                code=code,
                courier=form.courier.data or "",
                conditions=form.conditions.data or None,
                logger_ref=form.logger_ref.data or "",
                tracking_ref=form.tracking_ref.data or "",
            ),
        )
        if error is None:
            count = sum(1 for x in done.lines if x.status is LineStatus.HANDED_OVER)
            how = "shipped with" if done.delivery is Delivery.SHIPMENT else "handed over to"
            flash(f"Request {code}: {count} aliquot(s) {how} {done.courier}.", "success")
            return redirect(url_for("requests.dispatch", code=code))
        aliquot_request = _of_my_site(session, code)
    lines = aliquot_request.lines
    to_pick = [x for x in lines if x.status in TO_PICK]
    return _render(
        "requests/dispatch.html",
        error,
        {
            **_common(aliquot_request),
            "form": form,
            "to_pick": to_pick,
            "travelling": [
                x
                for x in lines
                if x.status in (*TRAVELLING, LineStatus.HANDED_OVER, LineStatus.RECEIVED)
            ],
            "short": [x for x in lines if x.status is LineStatus.SHORT],
            "may_dispatch": _may(aliquot_request, "dispatch") and not to_pick,
            "shipment": aliquot_request.delivery is Delivery.SHIPMENT,
            "manifest_url": _manifest_url(aliquot_request),
            "names": _names(session, {aliquot_request.dispatched_by_id}),
        },
    )


def _manifest_url(aliquot_request: AliquotRequest) -> str | None:
    """The manifest PDF, once something is picked and the page that serves it exists."""
    if "requests.manifest_pdf" not in current_app.view_functions:
        return None
    if not user_may("requests.manifest_pdf"):
        return None
    if not any(
        x.status in (*TRAVELLING, LineStatus.HANDED_OVER, LineStatus.RECEIVED)
        for x in aliquot_request.lines
    ):
        return None
    return url_for("requests.manifest_pdf", code=aliquot_request.code)
