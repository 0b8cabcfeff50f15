"""Pages of the history area: an item's full history, its chain-of-custody report (PDF) and
signed corrections of its recorded values.

The code in the address may be what a scanner typed (a DIN with its flags, ``=`` included):
``find_item`` in the services reads it as the bench does.
"""

from __future__ import annotations

import io

from flask import Blueprint, flash, redirect, render_template, send_file, url_for
from flask_login import current_user

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.db import utcnow
from lims.errors import DomainError
from lims.history import corrections, services
from lims.history.forms import CorrectionForm
from lims.history.report import chain_of_custody_pdf

bp = Blueprint("history", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)


def _not_found(code: str, exc: DomainError):
    return (
        render_template(
            "history/not_found.html", code=code, message=exc.message, status=exc.status_code
        ),
        exc.status_code,
    )


@bp.get("/items/<code>")
@allow(*BENCH)
def item(code: str):
    try:
        history = services.item_history(db.session(), actor=current_user, code=code)
    except DomainError as exc:
        return _not_found(code, exc)
    return render_template("history/item.html", history=history)


@bp.get("/items/<code>/report.pdf")
@allow(*BENCH)
def report(code: str):
    try:
        history = services.item_history(db.session(), actor=current_user, code=code)
    except DomainError as exc:
        return _not_found(code, exc)
    pdf = chain_of_custody_pdf(
        history,
        generated_by=f"{current_user.full_name} ({current_user.username})",
        generated_at=utcnow(),
    )
    response = send_file(
        io.BytesIO(pdf),
        mimetype="application/pdf",
        as_attachment=True,
        download_name=f"chain-of-custody-{history.item.code}.pdf",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/items/<code>/correct", methods=["GET", "POST"])
@allow(*BENCH)
def correct(code: str):
    session = db.session()
    try:
        target = corrections.correction_target(session, actor=current_user, code=code)
    except DomainError as exc:
        return _not_found(code, exc)
    form = CorrectionForm().offer(target)
    if not form.is_submitted():
        return render_template("history/correct.html", target=target, form=form)
    if not form.validate():
        return render_template("history/correct.html", target=target, form=form), 422
    item_code = target.item.code
    try:
        corrections.correct_item(
            session,
            actor=current_user,
            code=item_code,
            field=form.field.data,
            value=form.value.data,
            reason=form.reason.data,
            password=form.password.data,
        )
    except DomainError as exc:
        # Nothing was written: the request's session is rolled back at its end. The form keeps
        # what was typed (except the password) so the user can fix the one thing named.
        flash(exc.message, "error")
        return render_template("history/correct.html", target=target, form=form), exc.status_code
    flash(
        f"{item_code}: {corrections.CORRECTABLE[form.field.data].lower()} corrected and signed.",
        "success",
    )
    return redirect(url_for("history.item", code=item_code))
