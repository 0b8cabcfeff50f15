"""Forms of the storage pages: they shape input; the storage services decide and save."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from lims.storage.domain import BOX_TYPES, TemperatureClass
from lims.storage.models import RackKind, UnitType

SCAN = {"data-scan-field": True, "autocomplete": "off", "spellcheck": "false"}
CODE_HINT = "Letters, digits, '-', '_' or '.'; printed on its label and scanned."
#: The box type select: the grids, and a container with a capacity and no positions.
CONTAINER = "container"


def _choices(enum) -> list[SelectChoice]:
    return [SelectChoice(member.value, member.label) for member in enum]


def box_type_choices() -> list[SelectChoice]:
    grids = [SelectChoice(name, f"{name} ({geometry.capacity} positions)")
             for name, geometry in BOX_TYPES.items()]
    return [*grids, SelectChoice(CONTAINER, "Canister, bin or dry shipper (no positions)")]


def _reason(required: bool = False) -> TextAreaField:
    return TextAreaField(
        "Reason",
        description="Recorded in the audit trail with the change.",
        validators=[DataRequired() if required else Optional(), Length(max=500)],
    )


class UnitForm(FlaskForm):
    code = StringField(
        "Code", description=CODE_HINT, validators=[DataRequired(), Length(max=32)]
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    unit_type = SelectField("Type", choices=_choices(UnitType))
    temperature_class = SelectField("Temperature", choices=_choices(TemperatureClass))


class UnitEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    unit_type = SelectField("Type", choices=_choices(UnitType))
    temperature_class = SelectField("Temperature", choices=_choices(TemperatureClass))
    active = BooleanField("In use (takes new material)")
    reason = _reason(required=True)


class RackForm(FlaskForm):
    code = StringField(
        "Rack code", description=CODE_HINT, validators=[DataRequired(), Length(max=40)]
    )
    kind = SelectField("Kind", choices=_choices(RackKind))
    ordinal = IntegerField(
        "Place in the unit", default=1, validators=[DataRequired(), NumberRange(1, 999)]
    )


class BoxForm(FlaskForm):
    code = StringField(
        "Box code", description=CODE_HINT, validators=[DataRequired(), Length(max=40)]
    )
    label = StringField("Label", validators=[Length(max=100)])
    rack = SelectField("Rack")
    box_type = SelectField("Type", choices=box_type_choices())
    capacity = IntegerField(
        "Capacity",
        description="For a container without positions: how many bags or tubes it holds.",
        validators=[Optional(), NumberRange(1, 1000)],
    )
    ordinal = IntegerField(
        "Place in the rack", default=1, validators=[DataRequired(), NumberRange(1, 999)]
    )


class BoxEditForm(FlaskForm):
    label = StringField("Label", validators=[Length(max=100)])
    ordinal = IntegerField(
        "Place in the rack", validators=[DataRequired(), NumberRange(1, 999)]
    )
    active = BooleanField("In use")
    reason = _reason(required=True)


class PlaceForm(FlaskForm):
    item = StringField(
        "Scan the bag or tube", validators=[DataRequired(), Length(max=200)], render_kw=SCAN
    )
    box = StringField(
        "Scan the box", validators=[DataRequired(), Length(max=200)], render_kw=SCAN
    )
    position = StringField(
        "Position",
        description="Scan or type it (A1, A01, 12), or press Enter for the next free one.",
        validators=[Length(max=8)],
        render_kw={**SCAN, "data-scan-position": True},
    )


class FillForm(FlaskForm):
    item = StringField(
        "Scan the next tube", validators=[DataRequired(), Length(max=200)], render_kw=SCAN
    )
    position = StringField(
        "Position",
        description="Empty: the next free position, shown outlined on the map.",
        validators=[Length(max=8)],
        render_kw={"autocomplete": "off"},
    )


class UndoForm(FlaskForm):
    item = HiddenField(validators=[DataRequired(), Length(max=200)])
    event = HiddenField(validators=[DataRequired(), Length(max=20)])


class MoveBoxForm(FlaskForm):
    unit = SelectField("To unit")
    rack = SelectField("Rack", description="The rack in that unit (or none).")
    reason = _reason()


class RackEditForm(FlaskForm):
    kind = SelectField("Kind", choices=_choices(RackKind))
    ordinal = IntegerField(
        "Place in the unit", validators=[DataRequired(), NumberRange(1, 999)]
    )
    reason = _reason(required=True)


class MoveRackForm(FlaskForm):
    unit = SelectField("To unit")
    reason = _reason(required=True)


class EvacuateForm(FlaskForm):
    to_unit = SelectField("Move everything into")
    reason = _reason(required=True)
    accept_warmer = BooleanField(
        "If the target is warmer than some material needs, move it anyway and put that "
        "material on hold for review"
    )
