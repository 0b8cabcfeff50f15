"""Pages of rack-scanner verification: upload a box's scan, read the report, accept it.

Bench staff of the box's site upload the scanner's file and see the report: the box grid
coloured by what the scan found and the list of discrepancies. A manager accepts a report
with a decision for each missing tube and their password (an e-signature). Each POST calls
one service; a refused file is shown with every problem and its line number, nothing stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, FileSize
from wtforms import PasswordField, TextAreaField
from wtforms.validators import DataRequired, Length

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.errors import DomainError
from lims.storage import rackscan, verification, verification_accept
from lims.storage.verification_models import (
    Finding,
    RackVerification,
    RackVerificationLine,
    VerificationStatus,
)

bp = Blueprint("storage_verify", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)
MAX_MB = rackscan.MAX_BYTES // 1_048_576
#: The form field of the decision about a missing tube: "missing-<line id>".
MISSING_FIELD = "missing-"


class RackScanUploadForm(FlaskForm):
    file = FileField(
        "Rack scanner file (CSV or TXT)",
        description=(
            f"The scanner's export of this box, at most {MAX_MB} MB: one row per position "
            "(A1 or A01) with the tube's code."
        ),
        validators=[
            FileRequired("Choose the rack scanner's file."),
            FileSize(rackscan.MAX_BYTES, message=f"The file may be at most {MAX_MB} MB."),
        ],
        render_kw={"accept": ".csv,.txt,.tsv,text/csv,text/plain"},
    )


class AcceptForm(FlaskForm):
    note = TextAreaField(
        "Note",
        description="What was found and done (kept with the signature and the custody events).",
        validators=[Length(max=2000)],
    )
    password = PasswordField(
        "Your password (e-signature: verified)",
        validators=[DataRequired("Sign with your password.")],
        render_kw={"autocomplete": "current-password"},
    )


@dataclass(frozen=True)
class Cell:
    """One position of the report's box grid."""

    index: int
    name: str
    #: The finding shown there, or None for a position empty by scan and records.
    finding: Finding | None
    line: RackVerificationLine | None
    #: The tube recorded here was read at another position (it left this place empty).
    vacated_by: RackVerificationLine | None = None


def report_grid(report: RackVerification) -> list[list[Cell]]:
    """The box's positions row by row, each with what the scan found there."""
    geometry = report.box.geometry
    if geometry is None:
        return []
    read_at = {line.position: line for line in report.lines if line.position}
    unseen_at = {
        line.recorded_position: line
        for line in report.lines
        if line.position is None and line.recorded_position
    }
    vacated = {
        line.recorded_position: line
        for line in report.lines_of(Finding.MISPLACED)
        if line.recorded_position
    }
    cells = []
    for index in range(1, geometry.capacity + 1):
        line = read_at.get(index) or unseen_at.get(index)
        cells.append(
            Cell(
                index=index,
                name=geometry.name(index),
                finding=line.finding if line else None,
                line=line,
                vacated_by=vacated.get(index) if line is None else None,
            )
        )
    width = geometry.columns
    return [cells[start : start + width] for start in range(0, len(cells), width)]


def _upload_page(box_code: str, form: RackScanUploadForm, problems=(), status: int = 200):
    session = db.session()
    box = verification.box_to_verify(session, actor=current_user, box_code=box_code)
    earlier = verification.verifications_of_box(session, actor=current_user, box_code=box.code)
    return (
        render_template(
            "storage_verify/upload.html",
            box=box,
            form=form,
            problems=list(problems),
            earlier=earlier,
            max_mb=MAX_MB,
        ),
        status,
    )


def _flash_form_errors(form: FlaskForm) -> None:
    for name, errors in form.errors.items():
        label = getattr(form, name).label.text if hasattr(form, name) else name
        for error in errors:
            flash(f"{label}: {error}", "error")


@bp.route("/storage/boxes/<code>/verify", methods=["GET", "POST"])
@allow(*BENCH)
def verify(code: str):
    form = RackScanUploadForm()
    if request.method == "GET":
        return _upload_page(code, form)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _upload_page(code, form, status=422)
    upload = form.file.data
    try:
        report = verification.verify_box(
            db.session(),
            actor=current_user,
            box_code=code,
            file_bytes=upload.stream.read(rackscan.MAX_BYTES + 1),
            filename=upload.filename or "",
        )
    except rackscan.RackScanError as exc:
        db.session().rollback()
        flash(exc.message, "error")
        return _upload_page(code, form, problems=exc.problems, status=422)
    except DomainError as exc:
        db.session().rollback()
        flash(exc.message, "error")
        return _upload_page(code, form, status=exc.status_code)
    if report.status is VerificationStatus.CLEAN:
        flash(f"Box {report.box.code} is as recorded: {verification.summary(report)}.", "success")
    else:
        flash(
            f"{len(report.discrepancies)} discrepancies in box {report.box.code}: a manager "
            "reviews and accepts the report.",
            "error",
        )
    return redirect(url_for("storage_verify.report", verification_id=report.id))


@bp.get("/storage/verifications/<int:verification_id>")
@allow(*BENCH)
def report(verification_id: int):
    found = verification.get_verification(
        db.session(), actor=current_user, verification_id=verification_id
    )
    may_accept = current_user.role is Role.MANAGER and found.status is VerificationStatus.PENDING
    return render_template(
        "storage_verify/report.html",
        report=found,
        grid=report_grid(found),
        columns=found.box.geometry.columns if found.box.geometry else 1,
        Finding=Finding,
        Status=VerificationStatus,
        may_accept=may_accept,
        accept_form=AcceptForm() if may_accept else None,
        missing_field=MISSING_FIELD,
    )


def _missing_decisions() -> dict[int, str]:
    """The form's "missing-<line id>" choices (the service checks ids and values)."""
    decisions = {}
    for name, value in request.form.items():
        line_id = name.removeprefix(MISSING_FIELD)
        if name.startswith(MISSING_FIELD) and line_id.isascii() and line_id.isdigit():
            decisions[int(line_id)] = value
    return decisions


@bp.post("/storage/verifications/<int:verification_id>/accept")
@allow(Role.MANAGER)
def accept(verification_id: int) -> Any:
    back = redirect(url_for("storage_verify.report", verification_id=verification_id))
    form = AcceptForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return back
    try:
        accepted = verification_accept.accept_verification(
            db.session(),
            actor=current_user,
            verification_id=verification_id,
            password=form.password.data,
            note=form.note.data or "",
            missing=_missing_decisions(),
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return back
    resolutions = [line.resolution or "" for line in accepted.lines]
    done = tuple(verification_accept.DONE.values())
    moved = sum(1 for text in resolutions if text.startswith(done))
    lost = resolutions.count("recorded lost")
    flash(
        f"Report accepted and signed: {moved} tube(s) recorded where the scanner read them, "
        f"{lost} recorded lost.",
        "success",
    )
    return back
