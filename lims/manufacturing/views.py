"""Pages of the manufacturing area: lots of academic products, their QC, quarantine, release.

Technicians and managers see everything here; only managers sign QC reviews and releases.
The pages show the patient's pseudonym and the Chain of Identity, never who the patient is.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from lims import db
from lims.auth.access import allow
from lims.auth.forms import ConfirmForm
from lims.auth.models import Role
from lims.custody import production
from lims.errors import DomainError
from lims.manufacturing import services
from lims.manufacturing.forms import NewLotForm, QcResultForm, ReleaseForm, ReviewForm
from lims.manufacturing.overview import LotStatus, lot_overview, lots_at

bp = Blueprint("manufacturing", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)


@bp.context_processor
def lot_statuses() -> dict[str, Any]:
    return {"LotStatus": LotStatus}


@bp.route("/manufacturing")
@allow(*BENCH)
def index():
    queue = lots_at(db.session(), actor=current_user)
    return render_template("manufacturing/index.html", queue=queue)


@bp.route("/manufacturing/lots/new", methods=["GET", "POST"])
@allow(*BENCH)
def new_lot():
    form = NewLotForm()
    status = 200
    if form.validate_on_submit():
        try:
            lot = services.make_lot(
                db.session(),
                actor=current_user,
                lot_number=form.lot_number.data,
                apheresis_scans=(form.apheresis_codes.data or "").splitlines(),
                bag_count=form.bag_count.data,
                volume_ml=form.volume_ml.data,
                cells_per_bag=form.cells_per_bag.data,
                expires_at=form.expires_at.data,
            )
        except DomainError as exc:
            flash(exc.message, "error")
            status = exc.status_code
        else:
            flash(f"Lot {lot.lot_number} registered with {_bags(len(lot.bags))}.", "success")
            return redirect(url_for("manufacturing.lot", lot_number=lot.lot_number))
    elif request.method == "POST":
        status = 422
    return render_template("manufacturing/new_lot.html", form=form), status


def _lot_page(lot_number: str, status: int = 200, **forms: FlaskForm) -> tuple[str, int]:
    overview = lot_overview(db.session(), actor=current_user, lot_number=lot_number)
    forms.setdefault("qc_form", QcResultForm(formdata=None))
    forms.setdefault("review_form", ReviewForm(formdata=None))
    forms.setdefault("release_form", ReleaseForm(formdata=None))
    return (
        render_template(
            "manufacturing/lot.html",
            overview=overview,
            lot=overview.lot,
            episode=overview.lot.episode,
            is_manager=current_user.role is Role.MANAGER,
            confirm_form=ConfirmForm(formdata=None),
            **forms,
        ),
        status,
    )


def _bags(count: int) -> str:
    return f"{count} bag{'' if count == 1 else 's'}"


def _done(lot_number: str, message: str):
    flash(message, "success")
    return redirect(url_for("manufacturing.lot", lot_number=lot_number))


@bp.route("/manufacturing/lots/<lot_number>")
@allow(*BENCH)
def lot(lot_number: str):
    return _lot_page(lot_number)


@bp.route("/manufacturing/lots/<lot_number>/qc", methods=["POST"])
@allow(*BENCH)
def add_qc(lot_number: str):
    form = QcResultForm()
    if not form.validate_on_submit():
        return _lot_page(lot_number, 422, qc_form=form)
    try:
        result = production.add_qc_result(
            db.session(),
            actor=current_user,
            lot_number=lot_number,
            test=form.test.data,
            value=form.value.data,
            passed=form.passed.data == "yes",
            unit=form.unit.data or "",
            specification=form.specification.data or "",
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _lot_page(lot_number, exc.status_code, qc_form=form)
    if result.passed:
        return _done(lot_number, f"QC result {result.test} recorded.")
    flash(f"QC result {result.test} is out of specification: the lot's bags are on hold.", "error")
    return redirect(url_for("manufacturing.lot", lot_number=lot_number))


@bp.route("/manufacturing/lots/<lot_number>/quarantine", methods=["POST"])
@allow(*BENCH)
def quarantine(lot_number: str):
    if not ConfirmForm().validate_on_submit():
        return _lot_page(lot_number, 400)
    try:
        events = services.quarantine_lot(db.session(), actor=current_user, lot_number=lot_number)
    except DomainError as exc:
        flash(exc.message, "error")
        return _lot_page(lot_number, exc.status_code)
    return _done(lot_number, f"{_bags(len(events))} put in quarantine.")


@bp.route("/manufacturing/lots/<lot_number>/review", methods=["POST"])
@allow(Role.MANAGER)
def review(lot_number: str):
    form = ReviewForm()
    if not form.validate_on_submit():
        return _lot_page(lot_number, 422, review_form=form)
    try:
        services.review_qc(
            db.session(),
            actor=current_user,
            lot_number=lot_number,
            password=form.review_password.data,
            comment=form.comment.data,
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _lot_page(lot_number, exc.status_code, review_form=form)
    return _done(lot_number, "QC review signed.")


@bp.route("/manufacturing/lots/<lot_number>/release", methods=["POST"])
@allow(Role.MANAGER)
def release(lot_number: str):
    form = ReleaseForm()
    if not form.validate_on_submit():
        return _lot_page(lot_number, 422, release_form=form)
    try:
        events = services.release_lot(
            db.session(),
            actor=current_user,
            lot_number=lot_number,
            password=form.release_password.data,
            witness_username=request.form.get("witness_username"),
            witness_password=request.form.get("witness_password"),
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _lot_page(lot_number, exc.status_code, release_form=form)
    return _done(lot_number, f"{_bags(len(events))} released.")
