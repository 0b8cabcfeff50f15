"""Forms of the label pages: they shape input; ``print_labels`` and ``aliquot`` decide and save."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DecimalField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from lims.custody.domain import Kind
from lims.custody.models import TYPES_BY_KIND, UNITS
from lims.labels.models import DOWNLOAD, PrintFormat

SCAN = {"data-scan-field": True, "autocomplete": "off", "autofocus": True}
#: How a destination is written in the form: a download format, or a printer by its name.
PRINTER_PREFIX = "printer:"


def download_choice(fmt: PrintFormat) -> str:
    return f"{DOWNLOAD}:{fmt.value}"


def describe(template: Any) -> str:
    research = ", research" if template.research else ""
    size = f"{template.width_mm:g}×{template.height_mm:g} mm"
    return f"{template.name} ({size}, {template.dpi} dpi{research})"


class PrintForm(FlaskForm):
    """Template and destination of one batch; the view offers the ones that fit it."""

    template = SelectField("Label template", validators=[DataRequired()])
    destination = SelectField("Print to", validators=[DataRequired()])
    reason = TextAreaField(
        "Reason for the reprint",
        description="Required when a label was printed before: kept in the audit trail.",
        validators=[Length(max=2000)],
    )

    def offer(self, templates: list, printers: list) -> PrintForm:
        self.template.choices = [SelectChoice(t.name, describe(t)) for t in templates]
        self.destination.choices = [
            SelectChoice(download_choice(PrintFormat.PDF), "Download PDF"),
            SelectChoice(download_choice(PrintFormat.ZPL), "Download ZPL (Zebra)"),
        ] + [
            SelectChoice(f"{PRINTER_PREFIX}{p.name}", f"Printer {p.name} ({p.address})")
            for p in printers
        ]
        return self

    def target(self) -> tuple[str, str]:
        """(destination, format) as ``print_labels`` takes them."""
        value = self.destination.data or ""
        if value.startswith(PRINTER_PREFIX):
            return value.removeprefix(PRINTER_PREFIX), PrintFormat.ZPL.value
        return DOWNLOAD, value.removeprefix(f"{DOWNLOAD}:")


MATERIAL_CHOICES = [
    SelectChoice(m.value, m.label) for m in sorted(TYPES_BY_KIND[Kind.ALIQUOT], key=str)
]


class AliquotForm(FlaskForm):
    count = IntegerField(
        "Number of aliquots",
        validators=[
            InputRequired(message="Give the number of aliquots."),
            NumberRange(min=1, max=500, message="Make 1 to 500 aliquots at a time."),
        ],
        render_kw={"autocomplete": "off", "inputmode": "numeric"},
    )
    quantity_each = DecimalField(
        "Quantity in each",
        places=None,
        validators=[
            InputRequired(message="Give the quantity in each aliquot."),
            NumberRange(min=Decimal("0.001"), message="The quantity is a positive number."),
        ],
        render_kw={"autocomplete": "off", "inputmode": "decimal"},
    )
    unit = SelectField("Unit", choices=[SelectChoice(u, u) for u in UNITS])
    material_type = SelectField("Material type", choices=MATERIAL_CHOICES)
    timepoint = StringField(
        "Timepoint",
        description="Empty: the parent's timepoint.",
        validators=[Optional(), Length(max=16)],
        render_kw={"autocomplete": "off"},
    )


class VerifyLabelForm(FlaskForm):
    """The label scanned back on the bench; ``expected`` is the item whose card asked."""

    label_code = StringField(
        "Scan the label on the tube or bag",
        validators=[DataRequired(message="Scan the label."), Length(max=200)],
        render_kw=SCAN,
    )
    expected = HiddenField(validators=[Length(max=200)])
