"""Forms of the manufacturing pages: they shape input; the services decide and save."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    FloatField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional
from wtforms.validators import ValidationError as FormError

from lims.custody.production import QC_TESTS
from lims.localtime import site_zone
from lims.manufacturing.services import MAX_BAGS

QC_TEST_CHOICES = [SelectChoice(test, test.replace("_", " ").capitalize()) for test in QC_TESTS]
OUTCOME_CHOICES = [
    SelectChoice("yes", "Passed: within specification"),
    SelectChoice("no", "Failed: out of specification (puts the lot's bags on hold)"),
]


class CellCountField(StringField):
    """A whole number of cells, typed in full (250000000) or in E notation (2.5e8)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        self.data = None
        if not valuelist or not str(valuelist[0]).strip():
            return
        text = str(valuelist[0]).replace(" ", "").replace("_", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if (
            number is None
            or not number.is_finite()
            or number < 0
            or number >= Decimal("1e15")
            or number != number.to_integral_value()
        ):
            raise ValueError("Give the cells as a whole number, e.g. 250000000 or 2.5e8.")
        self.data = int(number)

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "" if self.data is None else str(self.data)


class NewLotForm(FlaskForm):
    lot_number = StringField(
        "Lot number",
        validators=[DataRequired(message="Give the lot number."), Length(max=40)],
        render_kw={"autocomplete": "off", "autocapitalize": "characters"},
    )
    #: One code per line; the scan list (manufacturing.js) writes here too.
    apheresis_codes = TextAreaField(
        "Apheresis collections",
        description="One per line: scan the bag, or type the DIN with its boxed check character.",
        validators=[Length(max=4000)],
        render_kw={"rows": 4, "autocomplete": "off", "spellcheck": "false"},
    )
    bag_count = IntegerField(
        "Number of bags",
        default=1,
        validators=[
            InputRequired(message="Give the number of bags."),
            NumberRange(min=1, max=MAX_BAGS, message=f"A lot has 1 to {MAX_BAGS} bags."),
        ],
    )
    volume_ml = FloatField(
        "Volume per bag (mL)",
        validators=[
            InputRequired(message="Give the volume per bag."),
            NumberRange(min=0.001, max=10000, message="The volume per bag is 0.001 to 10000 mL."),
        ],
    )
    cells_per_bag = CellCountField(
        "Cells per bag",
        description="Optional, e.g. 250000000 or 2.5e8.",
        validators=[Optional()],
    )
    expires_at = DateTimeLocalField(
        "Expiry",
        description="Optional; local time.",
        tz=site_zone,
        validators=[Optional()],
    )

    def validate_expires_at(self, field: DateTimeLocalField) -> None:
        if field.data is not None and not 2000 <= field.data.year <= 2100:
            raise FormError("Give an expiry between the years 2000 and 2100.")


class QcResultForm(FlaskForm):
    test = SelectField("Test", choices=QC_TEST_CHOICES)
    value = StringField(
        "Result", validators=[DataRequired(message="Give the result."), Length(max=60)]
    )
    unit = StringField("Unit", validators=[Optional(), Length(max=20)])
    specification = StringField(
        "Specification",
        description="e.g. ≥ 70 %",
        validators=[Optional(), Length(max=100)],
    )
    passed = RadioField(
        "Outcome",
        choices=OUTCOME_CHOICES,
        validators=[InputRequired(message="Say whether the result is within specification.")],
    )


class ReviewForm(FlaskForm):
    comment = TextAreaField("Comment", validators=[Optional(), Length(max=1000)])
    review_password = PasswordField(
        "Your password (signature: reviewed)",
        validators=[DataRequired(message="Sign with your password.")],
        render_kw={"autocomplete": "current-password"},
    )


class ReleaseForm(FlaskForm):
    """The manager's own password; the second person's fields come from ``_second_person.html``."""

    release_password = PasswordField(
        "Your password (signature: released)",
        validators=[DataRequired(message="Sign with your password.")],
        render_kw={"autocomplete": "current-password"},
    )
