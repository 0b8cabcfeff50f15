"""Pages of the exports area: the inventory export (filter form, streamed CSV, XLSX), the
capacity report and the printable box map.

Everything here reads; the only record written is the audit row of each export, by the
export itself. A refused export (an unknown code, another site) shows the filter form again
with the reason and the refusal's status, never a broken download.
"""

from __future__ import annotations

import io
import tempfile

from flask import (
    Blueprint,
    Response,
    flash,
    render_template,
    request,
    send_file,
    stream_with_context,
)
from flask_login import current_user

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.errors import DomainError
from lims.exports import choices, inventory, tables
from lims.exports.forms import CapacityFilterForm, InventoryFilterForm
from lims.exports.inventory import InventoryFilter
from lims.storage.boxmap_pdf import box_map_pdf
from lims.storage.capacity import capacity_for
from lims.storage.services import box_by_code

bp = Blueprint("exports", __name__, template_folder="templates")

STAFF = (Role.TECHNICIAN, Role.MANAGER, Role.ADMIN)
#: Researchers export too: their own view (see lims.exports.inventory).
EXPORTERS = (*STAFF, Role.RESEARCHER)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _inventory_page(status: int = 200):
    session = db.session()
    offered = choices.filter_choices(
        session, actor=current_user, site_code=request.args.get("site")
    )
    form = InventoryFilterForm(request.args).offer(offered)
    return (
        render_template(
            "exports/inventory.html",
            form=form,
            researcher=current_user.role is Role.RESEARCHER,
            columns=inventory.RESEARCHER_COLUMNS
            if current_user.role is Role.RESEARCHER
            else inventory.STAFF_COLUMNS,
        ),
        status,
    )


def _prepared():
    """The checked export for the query string, or the form again with the reason."""
    try:
        return inventory.prepare_export(
            db.session(),
            actor=current_user,
            filters=InventoryFilter.from_mapping(request.args),
        ), None
    except DomainError as exc:
        flash(exc.message, "error")
        return None, _inventory_page(exc.status_code)


@bp.get("/exports/inventory")
@allow(*EXPORTERS)
def inventory_form():
    return _inventory_page()


@bp.get("/exports/inventory.csv")
@allow(*EXPORTERS)
def inventory_csv():
    export, refusal = _prepared()
    if export is None:
        return refusal

    def chunks():
        # Runs after the view has returned and the request's session has been closed: the
        # stream reads and records its audit row through a session of its own, closed with
        # the context when the download ends.
        yield from tables.csv_text(db.session(), export)

    response = Response(stream_with_context(chunks()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename("csv")}"'
    response.headers["X-Accel-Buffering"] = "no"  # a proxy passes the chunks on as they come
    return response


@bp.get("/exports/inventory.xlsx")
@allow(*EXPORTERS)
def inventory_xlsx():
    export, refusal = _prepared()
    if export is None:
        return refusal
    # A temporary file, not memory: removed when the response has been sent and closed.
    workbook = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115 (send_file closes it)
    try:
        tables.write_xlsx(db.session(), export, workbook, progress=None)
    except BaseException:
        workbook.close()
        raise
    workbook.seek(0)
    return send_file(
        workbook, mimetype=XLSX, as_attachment=True, download_name=export.filename("xlsx")
    )


@bp.get("/storage/capacity")
@allow(*STAFF)
def capacity():
    session = db.session()
    report, site, unit = capacity_for(
        session,
        actor=current_user,
        site_code=request.args.get("site") or None,
        unit_code=request.args.get("unit") or None,
    )
    chosen = "*" if site is None else site.code
    offered = choices.filter_choices(session, actor=current_user, site_code=chosen)
    form = CapacityFilterForm(request.args).offer(offered)
    return render_template(
        "exports/capacity.html", report=report, site=site, unit=unit, form=form
    )


@bp.get("/storage/boxes/<code>/map.pdf")
@allow(*STAFF)
def box_map(code: str):
    session = db.session()
    box = box_by_code(session, code)
    pdf = box_map_pdf(session, box, current_user)
    return send_file(
        io.BytesIO(pdf),
        mimetype="application/pdf",
        as_attachment=False,
        download_name=f"box-map-{box.code}.pdf",
    )
