"""Forms of the shipment pages: they shape input; the services decide and save."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, FileSize
from wtforms import HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from lims.shipments.logger import MAX_BYTES
from lims.shipments.models import Conditions

CONDITION_CHOICES = [SelectChoice(c.value, c.label) for c in Conditions]
SCAN = {"data-scan-field": True, "autocomplete": "off", "autofocus": True}


class NewShipmentForm(FlaskForm):
    to_site = SelectField("Destination site", validators=[DataRequired()])
    conditions = SelectField("Shipping conditions", choices=CONDITION_CHOICES)
    courier = StringField(
        "Courier", description="Can also be filled in at dispatch.", validators=[Length(max=200)]
    )
    tracking_ref = StringField("Tracking reference", validators=[Length(max=100)])
    logger_ref = StringField(
        "Temperature logger",
        description="Serial number or reference of the logger packed with the shipment.",
        validators=[Length(max=100)],
    )
    #: A bag or tube to pack right away (the bench's "ship" button sends it along).
    item = HiddenField(validators=[Length(max=200)])


class AddLineForm(FlaskForm):
    scan = StringField(
        "Scan a bag or tube to add", validators=[DataRequired(), Length(max=200)], render_kw=SCAN
    )
    container = StringField(
        "Container",
        description="Dry shipper, canister or box it travels in (optional).",
        validators=[Length(max=100)],
        render_kw={"autocomplete": "off"},
    )


class RemoveLineForm(FlaskForm):
    code = HiddenField(validators=[DataRequired(), Length(max=200)])


class CancelForm(FlaskForm):
    reason = TextAreaField(
        "Reason", validators=[DataRequired(), Length(max=2000)], render_kw={"rows": 2}
    )


class DispatchForm(FlaskForm):
    courier = StringField("Courier", validators=[DataRequired(), Length(max=200)])
    tracking_ref = StringField("Tracking reference", validators=[Length(max=100)])
    logger_ref = StringField("Temperature logger", validators=[Length(max=100)])


class ReceiptScanForm(FlaskForm):
    scan = StringField(
        "Scan each bag or tube in the box",
        validators=[DataRequired(), Length(max=200)],
        render_kw=SCAN,
    )


class LoggerUploadForm(FlaskForm):
    file = FileField(
        "Temperature logger file (CSV)",
        description=f"At most {MAX_BYTES // 1_048_576} MB: a time and a temperature column.",
        validators=[
            FileRequired("Choose the logger's CSV file."),
            FileSize(MAX_BYTES, message=f"The file may be at most {MAX_BYTES // 1_048_576} MB."),
        ],
        render_kw={"accept": ".csv,.txt,text/csv,text/plain"},
    )


class CompleteReceiptForm(FlaskForm):
    note = TextAreaField(
        "Note",
        description="Required when anything is missing or unexpected: what happened.",
        validators=[Length(max=2000)],
    )
