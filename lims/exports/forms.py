"""The filter forms of the export and capacity pages: plain GET forms (nothing is changed, so
there is no CSRF token), their choices filled from the database by the view."""

from __future__ import annotations

from wtforms import Form, SelectChoice, SelectField, StringField
from wtforms.validators import Length, Optional

from lims.exports.choices import FilterChoices

SCAN = {"autocomplete": "off", "spellcheck": "false"}


def _choices(pairs: list[tuple[str, str]], anything: str | None) -> list[SelectChoice]:
    offered = [SelectChoice("", anything)] if anything else []
    return offered + [SelectChoice(value, label) for value, label in pairs]


class InventoryFilterForm(Form):
    site = SelectField("Site", validate_choice=False)
    unit = SelectField("Storage unit", validate_choice=False)
    rack = StringField(
        "Rack", validators=[Optional(), Length(max=40)], render_kw=SCAN, description="Scan or type."
    )
    box = StringField(
        "Box", validators=[Optional(), Length(max=40)], render_kw=SCAN, description="Scan or type."
    )
    study = SelectField("Study", validate_choice=False)
    material_type = SelectField("Material type", validate_choice=False)
    state = SelectField("State", validate_choice=False)

    def offer(self, choices: FilterChoices) -> InventoryFilterForm:
        self.site.choices = _choices(choices.sites, None)
        self.site.data = choices.site
        self.unit.choices = _choices(choices.units, "Any unit")
        self.study.choices = _choices([(study, study) for study in choices.studies], "Any study")
        self.material_type.choices = _choices(choices.material_types, "Any material type")
        self.state.choices = _choices(choices.states, "Any state")
        return self


class CapacityFilterForm(Form):
    site = SelectField("Site", validate_choice=False)
    unit = SelectField("Storage unit", validate_choice=False)

    def offer(self, choices: FilterChoices) -> CapacityFilterForm:
        self.site.choices = _choices(choices.sites, None)
        self.site.data = choices.site
        self.unit.choices = _choices(choices.units, "Every unit")
        return self
