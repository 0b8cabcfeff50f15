"""Forms of the researcher's request pages and the shared request page: they shape input; the
services (lims.requests.services, .search, .fulfilment) check it, decide and save.

The search is a plain GET form (nothing changes, so no CSRF token); every form that posts
carries one. Lengths and numbers are left to the services where they already check them, so
the page shows the service's own message at the field it names.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    Form,
    HiddenField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields import IntegerField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from lims.requests.models import Delivery
from lims.requests.search import ALIQUOT_TYPES

MATERIAL_CHOICES = [SelectChoice(m.value, m.label) for m in ALIQUOT_TYPES]
DELIVERY_CHOICES = [SelectChoice(d.value, d.label) for d in Delivery]
NUMBER = {"inputmode": "numeric", "autocomplete": "off"}
#: The search page's own query string, carried by its forms so that they lead back to it.
QUERY = [Length(max=2000)]


def _choices(values: list[tuple[str, str]], anything: str) -> list[SelectChoice]:
    return [SelectChoice("", anything)] + [SelectChoice(value, label) for value, label in values]


class SearchForm(Form):
    """The biobank search: every filter optional; ``SearchFilters`` checks the values."""

    study = SelectField("Study", validate_choice=False)
    product = SelectField("Product", validate_choice=False)
    material_type = SelectField("Material type", validate_choice=False)
    timepoint = StringField("Timepoint", description="A label: D0, D7, M3…")
    day_from = StringField("From day", description="Relative to infusion.", render_kw=NUMBER)
    day_to = StringField("To day", render_kw=NUMBER)
    min_quantity = StringField("Minimum quantity", render_kw={"inputmode": "decimal"})
    max_thaws = StringField("Most thaws", render_kw=NUMBER)
    site = SelectField("Site", validate_choice=False)

    def offer(self, *, studies: list[str], products: list[str], sites: list[str]) -> SearchForm:
        self.study.choices = _choices([(s, s) for s in studies], "Any study")
        self.product.choices = _choices([(p, p) for p in products], "Any product")
        self.material_type.choices = [SelectChoice("", "Any material type"), *MATERIAL_CHOICES]
        self.site.choices = _choices([(s, s) for s in sites], "Any site")
        return self


class AddItemsForm(FlaskForm):
    """Aliquots ticked in a search group, or codes typed or scanned on the request page."""

    items = SelectMultipleField("Aliquots", validate_choice=False, choices=[])
    codes = TextAreaField(
        "Aliquot codes",
        description="One per line (or separated by spaces or commas); a scanner works too.",
        validators=[Length(max=20000)],
        render_kw={"rows": 3, "autocomplete": "off", "spellcheck": "false"},
    )
    query = HiddenField(validators=QUERY)

    def item_codes(self) -> list[str]:
        typed = (self.codes.data or "").replace(",", " ").split()
        return [code for code in [*(self.items.data or []), *typed] if code.strip()]


class AddGroupForm(FlaskForm):
    """ "Add N of this group": the tubes are chosen as for a criterion (fewest thaws first)."""

    subject = HiddenField(validators=[DataRequired(), Length(max=120)])
    at = HiddenField(validators=[Length(max=120)])
    material_type = SelectField("Type", choices=MATERIAL_CHOICES)
    count = IntegerField(
        "How many",
        default=1,
        validators=[DataRequired(message="Say how many."), NumberRange(min=1, max=100)],
        render_kw={"min": 1, "max": 100},
    )
    query = HiddenField(validators=QUERY)


class RequestForm(FlaskForm):
    """The particulars of a request. A draft may be saved half-filled; submitting needs them."""

    title = StringField("Project title")
    principal_investigator = StringField("Principal investigator")
    ethics_ref = StringField(
        "Ethics approval reference", description="The committee's case number (e.g. H-24012345)."
    )
    dpa_ref = StringField(
        "Data processing agreement reference",
        description="The agreement or record of processing that covers the data of this project.",
    )
    external = BooleanField("The recipient is outside the network")
    recipient_institution = StringField(
        "Recipient institution", description="Required when the recipient is external."
    )
    mta_ref = StringField(
        "Material transfer agreement reference",
        description="Required when the recipient is external.",
    )
    intended_analyses = TextAreaField("Intended analyses", render_kw={"rows": 4})
    genetic = BooleanField("The analyses include genetic analyses")
    delivery = SelectField("Delivery", choices=DELIVERY_CHOICES)
    delivery_details = TextAreaField(
        "Shipping or pick-up details",
        description="The shipping address and contact, or who collects the material.",
        render_kw={"rows": 3},
    )

    FIELDS = (
        "title",
        "principal_investigator",
        "ethics_ref",
        "dpa_ref",
        "external",
        "recipient_institution",
        "mta_ref",
        "intended_analyses",
        "genetic",
        "delivery",
        "delivery_details",
    )

    def values(self) -> dict[str, object]:
        return {name: getattr(self, name).data for name in self.FIELDS}


class CriterionForm(FlaskForm):
    """ "``per_subject`` aliquots of this type per subject at these timepoints of this study"."""

    study = SelectField("Study", validate_choice=False)
    material_type = SelectField("Material type", choices=MATERIAL_CHOICES)
    timepoints = StringField(
        "Timepoints", description="Labels separated by commas (D0, D7, D28); empty for every one."
    )
    per_subject = StringField("Aliquots per subject", default="1", render_kw=NUMBER)
    min_quantity = StringField("Minimum quantity", render_kw={"inputmode": "decimal"})
    max_thaws = StringField("Most thaws", render_kw=NUMBER)
    site = SelectField("Site", validate_choice=False)

    def offer(self, *, studies: list[str], sites: list[str]) -> CriterionForm:
        self.study.choices = _choices([(s, s) for s in studies], "Choose the study…")
        self.site.choices = _choices([(s, s) for s in sites], "Any site")
        return self


class RemoveItemForm(FlaskForm):
    item = HiddenField(validators=[DataRequired(), Length(max=200)])


class CancelForm(FlaskForm):
    reason = TextAreaField(
        "Reason",
        description="Told to the biobank; reserved aliquots are freed at once.",
        validators=[DataRequired(message="Say why the request is cancelled."), Length(max=500)],
        render_kw={"rows": 2},
    )


class ReceiptForm(FlaskForm):
    note = TextAreaField(
        "Note (optional)",
        description="Anything to remark on the arrival: temperature, damage, a missing tube.",
        validators=[Optional(), Length(max=500)],
        render_kw={"rows": 2},
    )
