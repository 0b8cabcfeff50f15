"""Pages of the imports: a freezer layout and an existing inventory, for biobank managers.

Each upload is checked row by row and answered with a report page: every problem with its row
and column, or what was (in a dry run: would be) created. Nothing is kept on the server
between the dry run and the import: the import is the same file sent again, and it is checked
again in full before anything is written. Sending the same import twice is harmless: the
second finds its boxes and positions taken and writes nothing.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, flash, render_template
from flask_login import current_user

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.errors import DomainError, NotFound
from lims.imports import inventory, layout
from lims.imports.forms import ImportForm, inventory_form, layout_form
from lims.imports.tables import MAX_BYTES
from lims.imports.workbook import FORMATS

bp = Blueprint("imports", __name__, template_folder="templates")

TEMPLATES = {"layout": layout.layout_template, "inventory": inventory.inventory_template}
#: Rows per upload here. Each tube is a registration and a store step, each with its custody
#: event and audit rows (about 25 ms a tube on PostgreSQL), and a page must answer well within
#: the server's worker timeout; ``lims import`` on the command line takes 20,000 rows.
PAGE_ROWS = {"layout": 2000, "inventory": 500}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _index(status: int = 200) -> Any:
    return render_template(
        "imports/index.html",
        layout_form=layout_form(),
        inventory_form=inventory_form(),
        limits=PAGE_ROWS,
    ), status


def _filename(form: ImportForm) -> str:
    """The uploaded file's own name (no client path, no control characters) for the audit."""
    name = re.split(r"[\\/]", form.file.data.filename or "")[-1]
    return _UNSAFE.sub("", name).strip()[:100] or "upload"


def _upload(form: ImportForm) -> bytes | None:
    if not form.validate_on_submit():
        for name, errors in form.errors.items():
            label = getattr(form, name).label.text if hasattr(form, name) else name
            for error in errors:
                flash(f"{label}: {error}", "error")
        return None
    # One byte more than allowed: enough to refuse a larger file without reading all of it.
    return form.file.data.stream.read(MAX_BYTES + 1)


@bp.get("/imports")
@allow(Role.MANAGER)
def index():
    return _index()


@bp.get("/imports/<kind>/template.<fmt>")
@allow(Role.MANAGER)
def template(kind: str, fmt: str):
    if kind not in TEMPLATES or fmt not in FORMATS:
        raise NotFound("There is no such template; there are layout and inventory, csv and xlsx.")
    return Response(
        TEMPLATES[kind](fmt),
        mimetype=FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{kind}-import-template.{fmt}"'},
    )


@bp.post("/imports/layout")
@allow(Role.MANAGER)
def import_layout():
    form = layout_form()
    data = _upload(form)
    if data is None:
        return _index(422)
    try:
        report = layout.import_layout_file(
            db.session(),
            actor=current_user,
            data=data,
            filename=_filename(form),
            dry_run=not form.run.data,
            reason=form.reason.data or "",
            max_rows=PAGE_ROWS["layout"],
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _index(exc.status_code)
    return _result("imports/layout_result.html", report, form, _filename(form))


@bp.post("/imports/inventory")
@allow(Role.MANAGER)
def import_inventory():
    form = inventory_form()
    data = _upload(form)
    if data is None:
        return _index(422)
    try:
        report = inventory.import_inventory_file(
            db.session(),
            actor=current_user,
            data=data,
            filename=_filename(form),
            dry_run=not form.run.data,
            reason=form.reason.data or "",
            max_rows=PAGE_ROWS["inventory"],
        )
    except DomainError as exc:
        flash(exc.message, "error")
        return _index(exc.status_code)
    return _result("imports/inventory_result.html", report, form, _filename(form))


def _result(page: str, report: Any, form: ImportForm, filename: str) -> Any:
    if not report.ok:
        flash(
            f"{len(report.problems)} problem(s) in {filename}: nothing was imported. Correct "
            "the rows named below and upload the file again.",
            "error",
        )
    elif report.dry_run:
        flash(f"No problems in {filename}. Nothing was imported yet (dry run).", "info")
    else:
        flash(f"{filename} imported.", "success")
    return render_template(page, report=report, form=form, filename=filename), (
        200 if report.ok else 422
    )
