"""Pages of the shipments area: packing, dispatch, receipt with reconciliation, logger file.

Every page and step is for bench staff (technicians and managers) of the shipment's two sites.
Each POST calls one service and redirects back to the shipment (post/redirect/get); a refusal
is flashed as an error, loudly, and the scan field gets the focus again.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectChoice

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role, Site, User
from lims.errors import DomainError, Forbidden
from lims.shipments import excursions, receipt, services
from lims.shipments.forms import (
    AddLineForm,
    CancelForm,
    CompleteReceiptForm,
    DispatchForm,
    LoggerUploadForm,
    NewShipmentForm,
    ReceiptScanForm,
    RemoveLineForm,
)
from lims.shipments.logger import MAX_BYTES
from lims.shipments.models import Shipment, ShipmentState

bp = Blueprint("shipments", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: Readings listed on the page; the file may hold far more (all are kept and summarised).
READINGS_SHOWN = 2000


def _back(code: str) -> Any:
    return redirect(url_for("shipments.detail", code=services.normalise_code(code)))


def _flash_form_errors(form: FlaskForm) -> None:
    for name, errors in form.errors.items():
        label = getattr(form, name).label.text if hasattr(form, name) else name
        for error in errors:
            flash(f"{label}: {error}", "error")


def _flash_outcome(outcome: services.LineOutcome) -> None:
    if outcome.loud:
        flash(outcome.message, "error")
    elif outcome.kind in {"already_added", "already_scanned"}:
        flash(outcome.message, "info")
    else:
        flash(outcome.message, "success")


def _site_choices(session) -> list[SelectChoice]:
    sites = session.scalars(
        select(Site)
        .where(Site.active.is_(True), Site.id != current_user.site_id)
        .order_by(Site.code)
    )
    return [SelectChoice("", "Choose the destination…")] + [
        SelectChoice(site.code, f"{site.code} – {site.name}") for site in sites
    ]


# -- lists and new shipments ----------------------------------------------------------------


@bp.get("/shipments")
@allow(*BENCH)
def index():
    lists = services.shipments_of_site(db.session(), current_user.site_id)
    return render_template("shipments/index.html", lists=lists)


@bp.route("/shipments/new", methods=["GET", "POST"])
@allow(*BENCH)
def new():
    session = db.session()
    form = NewShipmentForm()
    form.to_site.choices = _site_choices(session)
    if request.method == "GET":
        form.item.data = request.args.get("item", "")[:200]
        return render_template("shipments/new.html", form=form)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return render_template("shipments/new.html", form=form), 422
    try:
        shipment = services.create_shipment(
            session,
            actor=current_user,
            to_site_code=form.to_site.data,
            conditions=form.conditions.data,
            courier=form.courier.data or "",
            tracking_ref=form.tracking_ref.data or "",
            logger_ref=form.logger_ref.data or "",
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return render_template("shipments/new.html", form=form), exc.status_code
    code = shipment.code
    flash(f"Shipment {code} created: scan what goes in it.", "success")
    if form.item.data:
        try:
            _flash_outcome(
                services.add_to_shipment(
                    session,
                    actor=current_user,
                    shipment_code=code,
                    scan=form.item.data,
                    manual=False,
                )
            )
        except DomainError as exc:
            flash(exc.message, "error")
    return _back(code)


# -- one shipment ---------------------------------------------------------------------------


def _user_names(session, shipment: Shipment) -> dict[int, str]:
    ids = {
        shipment.created_by_id,
        shipment.dispatched_by_id,
        shipment.received_by_id,
        *(line.added_by_id for line in shipment.lines),
        *(line.scanned_by_id for line in shipment.lines),
    } - {None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.full_name).where(User.id.in_(ids))).all())


def _limits(shipment: Shipment) -> list[tuple[Any, Any]]:
    """The temperature limits of what travels in the shipment (for showing and marking)."""
    try:
        pairs = {
            excursions.limits_for(shipment.conditions, line.item.material_type)
            for line in shipment.lines
            if line.item is not None
        }
        return sorted(pairs) or [excursions.limits_for(shipment.conditions, None)]
    except DomainError:
        return []


@bp.get("/shipments/<code>")
@allow(*BENCH)
def detail(code: str):
    canonical = services.normalise_code(code)
    if canonical != code:
        return redirect(url_for("shipments.detail", code=canonical))
    session = db.session()
    shipment = services.get_shipment(session, code)
    at_origin = current_user.site_id == shipment.from_site_id
    at_destination = current_user.site_id == shipment.to_site_id
    if not (at_origin or at_destination):
        raise Forbidden(
            f"Shipment {shipment.code} is between {shipment.from_site.code} and "
            f"{shipment.to_site.code}; only their staff see it."
        )
    state = shipment.state
    uploaded = shipment.logger_uploaded_at is not None
    limits = _limits(shipment)
    readings = excursions.readings_of(session, shipment, limit=READINGS_SHOWN) if uploaded else []
    return render_template(
        "shipments/detail.html",
        shipment=shipment,
        State=ShipmentState,
        at_origin=at_origin,
        at_destination=at_destination,
        found=receipt.reconciliation(shipment),
        names=_user_names(session, shipment),
        limits=limits,
        readings=[
            (reading, any(not low <= reading.celsius <= high for low, high in limits))
            for reading in readings
        ],
        reading_count=excursions.reading_count(session, shipment) if uploaded else 0,
        needs_witness=(
            state is ShipmentState.IN_TRANSIT
            and at_destination
            and receipt.receipt_needs_second_person(session, shipment, current_user)
        ),
        may_upload=not uploaded and state in (ShipmentState.IN_TRANSIT, ShipmentState.RECEIVED),
        max_mb=MAX_BYTES // 1_048_576,
        add_form=AddLineForm(),
        dispatch_form=DispatchForm(obj=shipment) if state is ShipmentState.PACKING else None,
        cancel_form=CancelForm() if state is ShipmentState.PACKING else None,
        scan_form=ReceiptScanForm(),
        upload_form=LoggerUploadForm(),
        complete_form=CompleteReceiptForm(),
    )


@bp.post("/shipments/<code>/lines")
@allow(*BENCH)
def add_line(code: str):
    form = AddLineForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        outcome = services.add_to_shipment(
            db.session(),
            actor=current_user,
            shipment_code=code,
            scan=form.scan.data,
            container=form.container.data or "",
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    _flash_outcome(outcome)
    return _back(code)


@bp.post("/shipments/<code>/lines/remove")
@allow(*BENCH)
def remove_line(code: str):
    form = RemoveLineForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        removed = services.remove_from_shipment(
            db.session(), actor=current_user, shipment_code=code, scan=form.code.data
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    flash(f"{removed} taken off the shipment.", "success")
    return _back(code)


@bp.post("/shipments/<code>/dispatch")
@allow(*BENCH)
def dispatch(code: str):
    form = DispatchForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        shipment = services.dispatch_shipment(
            db.session(),
            actor=current_user,
            shipment_code=code,
            courier=form.courier.data,
            tracking_ref=form.tracking_ref.data or "",
            logger_ref=form.logger_ref.data or "",
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    flash(
        f"Shipment {shipment.code} dispatched with {shipment.courier}: "
        f"{len(shipment.lines)} item(s) in transit to {shipment.to_site.code}.",
        "success",
    )
    return _back(code)


@bp.post("/shipments/<code>/cancel")
@allow(*BENCH)
def cancel(code: str):
    form = CancelForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        shipment = services.cancel_shipment(
            db.session(), actor=current_user, shipment_code=code, reason=form.reason.data
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    flash(f"Shipment {shipment.code} cancelled; its items can go in another one.", "success")
    return _back(code)


@bp.post("/shipments/<code>/receipt/scan")
@allow(*BENCH)
def receipt_scan(code: str):
    form = ReceiptScanForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        outcome = receipt.scan_on_receipt(
            db.session(), actor=current_user, shipment_code=code, scan=form.scan.data
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    _flash_outcome(outcome)
    return _back(code)


@bp.post("/shipments/<code>/receipt/complete")
@allow(*BENCH)
def complete_receipt(code: str):
    form = CompleteReceiptForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    try:
        found = receipt.complete_receipt(
            db.session(),
            actor=current_user,
            shipment_code=code,
            note=form.note.data or "",
            witness_username=request.form.get("witness_username"),
            witness_password=request.form.get("witness_password"),
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    flash(f"Receipt complete: {len(found.received)} item(s) received.", "success")
    if not found.complete:
        stay = "; the missing items stay in transit" if found.missing else ""
        flash(
            f"Recorded with {len(found.missing)} missing and {len(found.unexpected)} "
            f"unexpected{stay}.",
            "error",
        )
    return _back(code)


@bp.post("/shipments/<code>/logger")
@allow(*BENCH)
def upload_logger(code: str):
    form = LoggerUploadForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _back(code)
    upload = form.file.data
    try:
        summary = excursions.upload_logger_csv(
            db.session(),
            actor=current_user,
            shipment_code=code,
            data=upload.stream.read(MAX_BYTES + 1),
            filename=upload.filename or "",
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _back(code)
    flash(
        f"{summary.readings} readings stored: {summary.minimum} to {summary.maximum} °C, "
        f"{summary.excursions} outside the limits.",
        "success",
    )
    if summary.held:
        flash(
            "TEMPERATURE EXCURSION: on hold until a manager clears it: "
            + ", ".join(summary.held)
            + ".",
            "error",
        )
    return _back(code)
