"""Label pages: print (or reprint) labels of an item, a batch, a box or a shipment; aliquot at
the bench and print the batch; confirm a label by scanning it back; the site's print queue.

A download answers with the file itself; a print to a printer redirects back to the page
(post/redirect/get). A refusal (no reason for a reprint, a printer that does not answer) is
shown on the page, and nothing is recorded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.custody import production
from lims.custody.domain import TERMINAL_STATES
from lims.custody.models import Item, MaterialType
from lims.custody.services import find_item, visible_to
from lims.errors import DomainError, Forbidden, NotFound, ValidationError
from lims.labels import printing
from lims.labels.forms import AliquotForm, PrintForm, VerifyLabelForm
from lims.labels.models import PrintStatus
from lims.labels.verification import verify_label

bp = Blueprint("labels", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)


def may_aliquot(item: Item) -> bool:
    """Whether the item card offers "Aliquot…" (what ``production.aliquot`` accepts)."""
    return (
        item.site_id == current_user.site_id
        and item.state not in TERMINAL_STATES[item.kind] | production.NOT_DERIVABLE
    )


def _print(title: str, back: str, *, items: Sequence[str] = (), box: str = "", shipment: str = ""):
    """GET: what the batch needs and the choices; POST: print it (or hand over the file)."""
    session = db.session()
    where = {"item_codes": items, "box_code": box or None, "shipment_code": shipment or None}
    plan = printing.plan_print(session, actor=current_user, **where)
    form = PrintForm().offer(plan.templates, plan.printers)
    if request.method == "GET" or not form.validate_on_submit():
        status = 200 if request.method == "GET" else 422
        return _print_page(title, back, plan, form, status)
    destination, fmt = form.target()
    try:
        printout = printing.print_labels(
            session,
            actor=current_user,
            template_name=form.template.data,
            destination=destination,
            fmt=fmt,
            reason=form.reason.data,
            reprint=bool(plan.printed_before),
            **where,
        )
    except DomainError as exc:
        session.rollback()
        return _print_page(title, back, plan, form, exc.status_code, error=exc.message)
    if printout.job.status is PrintStatus.DOWNLOADED:
        return send_file(
            io.BytesIO(printout.data),
            mimetype=printout.mimetype,
            as_attachment=True,
            download_name=printout.filename,
        )
    count = printout.job.label_count
    flash(f"{count} label{'s' if count > 1 else ''} sent to {printout.job.destination}.", "success")
    return redirect(request.full_path)


def _print_page(title, back, plan, form, status, error=None):
    page = render_template(
        "labels/print.html", title=title, back=back, plan=plan, form=form, error=error
    )
    return page, status


@bp.route("/labels/items/<code>", methods=["GET", "POST"])
@allow(*BENCH)
def item(code: str):
    found = find_item(db.session(), code)
    if not visible_to(current_user, found):
        raise NotFound(f"No bag or tube with identifier {found.code}.")
    back = url_for("bench.scan", code=found.code, **{"from": "link"})
    return _print(f"Label of {found.code}", back, items=[found.code])


@bp.route("/labels/batch", methods=["GET", "POST"])
@allow(*BENCH)
def batch():
    """Labels of several items, in the order given (n/N): an aliquoting run."""
    codes = [code for code in request.args.getlist("item") if code.strip()]
    if len(codes) > printing.MAX_LABELS:
        raise ValidationError(f"At most {printing.MAX_LABELS} labels in one job.")
    back = url_for("bench.scan", code=codes[0], **{"from": "link"}) if codes else url_for(
        "bench.scan"
    )
    return _print(f"Labels of {len(codes)} items", back, items=codes)


@bp.route("/labels/boxes/<code>", methods=["GET", "POST"])
@allow(*BENCH)
def box(code: str):
    return _print(f"Box label {code}", url_for("storage.box", code=code), box=code)


@bp.route("/labels/shipments/<code>", methods=["GET", "POST"])
@allow(*BENCH)
def shipment(code: str):
    back = url_for("shipments.detail", code=code)
    return _print(f"Shipment label {code}", back, shipment=code)


@bp.get("/labels/episodes/<coi>")
@allow(*BENCH)
def episode(coi: str):
    """The episode's material here still without a printed label: the print point after
    registration."""
    items = printing.unlabelled_of_episode(db.session(), actor=current_user, coi=coi)
    return render_template("labels/episode.html", coi=coi, items=items)


@bp.route("/labels/aliquot/<code>", methods=["GET", "POST"])
@allow(*BENCH)
def aliquot(code: str):
    """Split a sample into N aliquots, then print their N vial labels as one batch."""
    session = db.session()
    parent = find_item(session, code)
    if parent.site_id != current_user.site_id:
        raise Forbidden(f"{parent.code} is at {parent.site.code}; it is aliquoted where it is.")
    form = AliquotForm(unit=parent.unit, material_type=_default_material(parent))
    if request.method == "GET" or not form.validate_on_submit():
        return _aliquot_page(parent, form, 200 if request.method == "GET" else 422)
    try:
        children = production.aliquot(
            session,
            actor=current_user,
            parent_code=parent.code,
            count=form.count.data,
            quantity_each=form.quantity_each.data,
            unit=form.unit.data,
            material_type=form.material_type.data,
            timepoint=form.timepoint.data or None,
        )
    except DomainError as exc:
        session.rollback()
        return _aliquot_page(parent, form, exc.status_code, error=exc.message)
    flash(f"{len(children)} aliquots of {code} registered: print their labels.", "success")
    return redirect(url_for("labels.batch", item=[child.code for child in children]))


def _default_material(parent: Item) -> str:
    """What aliquots of this parent usually are: PBMC from a collection, retention samples
    from a bag, the same type from a sample."""
    if parent.material_type is MaterialType.LEUKAPHERESIS:
        return MaterialType.PBMC.value
    if parent.material_type is MaterialType.CAR_T_PRODUCT:
        return MaterialType.PRODUCT_RETENTION.value
    return parent.material_type.value


def _aliquot_page(parent: Item, form: AliquotForm, status: int, error: str | None = None):
    page = render_template(
        "labels/aliquot.html", parent=parent, form=form, error=error, allowed=may_aliquot(parent)
    )
    return page, status


@bp.post("/labels/verify")
@allow(*BENCH)
def verify():
    """The "Confirm label" of the item card: the label scanned must be the card's item."""
    form = VerifyLabelForm()
    expected = (form.expected.data or "").strip() or None
    back: dict[str, Any] = {"code": expected, "from": "link"} if expected else {}
    if not form.validate_on_submit():
        flash("Scan the label on the tube or bag.", "error")
        return redirect(url_for("bench.scan", **back))
    try:
        found = verify_label(
            db.session(), actor=current_user, scan=form.label_code.data, expected=expected
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(url_for("bench.scan", **back))
    flash(f"{found.code}: label confirmed on the tube.", "success")
    return redirect(url_for("bench.scan", code=found.code, **{"from": "link"}))


@bp.get("/labels/queue")
@allow(*BENCH)
def queue():
    jobs = printing.print_queue(db.session(), actor=current_user)
    return render_template("labels/queue.html", jobs=jobs)
