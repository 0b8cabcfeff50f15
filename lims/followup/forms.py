"""Forms of the follow-up pages: they shape input; the services decide and save."""

from __future__ import annotations

from decimal import Decimal

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    DecimalField,
    Form,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from lims.custody.models import UNITS
from lims.db import utcnow
from lims.localtime import site_zone

UNIT_CHOICES = [SelectChoice(unit, unit) for unit in UNITS]
#: The browser's datetime-local value first (how the field renders), then what people type.
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


class SampleForm(FlaskForm):
    """A follow-up sample of one timepoint; the material types offered are the ones it misses
    (the view sets them from the schedule)."""

    timepoint = HiddenField(validators=[DataRequired(), Length(max=16)])
    material_type = SelectField(
        "Material type", validators=[InputRequired(message="Choose the material type.")]
    )
    quantity = DecimalField(
        "Quantity",
        places=None,
        validators=[
            InputRequired(message="Give the quantity."),
            NumberRange(
                min=Decimal("0.001"),
                max=Decimal("999999999"),
                message="The quantity is a positive number.",
            ),
        ],
        render_kw={"autocomplete": "off", "inputmode": "decimal"},
    )
    unit = SelectField("Unit", choices=UNIT_CHOICES, default="mL")
    collected_at = DateTimeLocalField(
        "Collected at",
        description="Local time; now unless the draw was earlier.",
        format=DATETIME_FORMATS,
        tz=site_zone,
        default=utcnow,
        validators=[InputRequired(message="Give the collection time.")],
    )
    cell_count = IntegerField(
        "Cell count",
        description="Optional; cells only (e.g. PBMC), as a whole number.",
        validators=[
            Optional(),
            NumberRange(min=0, max=10**15, message="A cell count is a whole number ≥ 0."),
        ],
        render_kw={"autocomplete": "off", "inputmode": "numeric"},
    )


class WorklistSiteForm(Form):
    """Which site's work list a manager looks at (query string: GET, no CSRF token)."""

    site = SelectField("Site", validators=[Optional()])
