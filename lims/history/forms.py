"""The correction form: it shapes input; ``correct_item`` checks, signs and saves."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from lims.history.corrections import CorrectionTarget


class CorrectionForm(FlaskForm):
    field = SelectField("Value to correct", validators=[DataRequired()])
    value = StringField(
        "New value",
        description=(
            "Dates and times as YYYY-MM-DD HH:MM in local time; quantities in the item's unit; "
            "cell counts as whole numbers (2.5e8 works). Leave empty to remove an optional value."
        ),
        validators=[Length(max=100)],
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    reason = TextAreaField(
        "Reason for the correction",
        description="Kept with the old value in the audit trail and shown on the report.",
        validators=[DataRequired(message="Give the reason for the correction."), Length(max=1000)],
    )
    password = PasswordField(
        "Your password (e-signature: corrected)",
        validators=[DataRequired(message="Sign with your password."), Length(max=256)],
    )

    def offer(self, target: CorrectionTarget) -> CorrectionForm:
        """Offer the values this item has, each with its current value in the label."""
        self.field.choices = [
            SelectChoice(value.field, f"{value.label} (now {value.current})")
            for value in target.values
        ]
        return self
