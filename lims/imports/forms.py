"""The upload forms of the import pages: they shape input; the import modules decide and save."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import StringField, SubmitField
from wtforms.validators import Length

ACCEPT = (
    ".csv,.xlsx,text/csv,"
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
)


class ImportForm(FlaskForm):
    """One upload: a dry run that only checks, or the import itself (the file is sent again)."""

    file = FileField(
        "File (CSV or XLSX)",
        description="At most 5 MB. Only the first sheet of a workbook is read.",
        validators=[FileRequired("Choose the file to import.")],
        render_kw={"accept": ACCEPT},
    )
    reason = StringField(
        "Reason",
        description="Why the import is done; kept in the audit trail with the file name.",
        validators=[Length(max=500)],
        render_kw={"autocomplete": "off"},
    )
    dry_run = SubmitField("Dry run: check only")
    run = SubmitField("Import")


def layout_form() -> ImportForm:
    return ImportForm(prefix="layout")


def inventory_form() -> ImportForm:
    return ImportForm(prefix="inventory")
