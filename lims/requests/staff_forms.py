"""Forms of the biobank staff's request pages: they shape input; the services decide and save.

Several forms share one page and one address; the hidden ``step`` each template writes says
which was posted. Lists of choices (pseudonyms, aliquot codes) are checked by the services,
which name what they refuse, so the multiple-choice fields here do not check them again.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import AnyOf, DataRequired, Length

from lims.requests.models import Decision, ShortKind
from lims.shipments.models import Conditions

SCAN = {
    "data-scan-field": True,
    "autocomplete": "off",
    "autocapitalize": "characters",
    "spellcheck": "false",
    "autofocus": True,
}
SIGNATURE = {"autocomplete": "current-password"}
DECISIONS = [d.value for d in Decision]
SHORT_CHOICES = [SelectChoice(k.value, k.label) for k in ShortKind]
CONDITION_CHOICES = [SelectChoice("", "Not given (pick-up)")] + [
    SelectChoice(c.value, c.label) for c in Conditions
]


class StartReviewForm(FlaskForm):
    """Take a submitted request for review (the button only)."""


class OptOutForm(FlaskForm):
    registered = SelectMultipleField("Found in the register", validate_choice=False)
    note = StringField(
        "Note",
        description="How it was looked up, e.g. the register's reply reference (optional).",
        validators=[Length(max=200)],
    )


class DecideForm(FlaskForm):
    """The manager's signed decision; ``decision`` comes from the button pressed."""

    approve = SelectMultipleField("Approve", validate_choice=False)
    comment = TextAreaField(
        "Comment",
        description="Required to reject: the researcher reads it.",
        validators=[Length(max=2000)],
        render_kw={"rows": 3},
    )
    password = PasswordField(
        "Your password (e-signature)",
        validators=[DataRequired(message="Sign with your password.")],
        render_kw=SIGNATURE,
    )
    decision = StringField(
        validators=[AnyOf(DECISIONS, message="Press Approve selected or Reject.")]
    )


class CommitteeForm(FlaskForm):
    """The access committee's signed decision for one study."""

    comment = TextAreaField(
        "Comment",
        description="Required to reject: the researcher and the biobank read it.",
        validators=[Length(max=2000)],
        render_kw={"rows": 3},
    )
    password = PasswordField(
        "Your password (e-signature)",
        validators=[DataRequired(message="Sign with your password.")],
        render_kw=SIGNATURE,
    )
    decision = StringField(validators=[AnyOf(DECISIONS, message="Press Approve or Reject.")])


class PickScanForm(FlaskForm):
    scan = StringField(
        "Scan the tube you take out",
        validators=[DataRequired(message="Scan a tube."), Length(max=200)],
        render_kw=SCAN,
    )


class ShortPickForm(FlaskForm):
    """A tube on the list that cannot be picked; one such form per line of the list."""

    item_code = StringField(validators=[DataRequired(), Length(max=200)])
    kind = SelectField("What is wrong", choices=SHORT_CHOICES)
    reason = StringField(
        "What was found",
        validators=[DataRequired(message="Say what was found (or not found)."), Length(max=500)],
    )


class DispatchForm(FlaskForm):
    courier = StringField(
        "Courier, or the person who collects",
        validators=[Length(max=200)],
    )
    conditions = SelectField(
        "Shipping conditions",
        description="Required for a shipment.",
        choices=CONDITION_CHOICES,
        default="",
    )
    logger_ref = StringField(
        "Temperature logger",
        description="Serial number or reference of the logger packed with the material.",
        validators=[Length(max=100)],
    )
    tracking_ref = StringField("Tracking reference", validators=[Length(max=100)])
