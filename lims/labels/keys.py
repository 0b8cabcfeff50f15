"""The vocabulary of label templates: kinds of label, the content keys each may show, and
which of them identify a patient (DOMAIN.md §9). The template loader refuses anything else;
``labels/README.md`` documents them for whoever writes a template."""

from __future__ import annotations

#: What each kind of template labels: an item (bag or tube), a box or a shipment.
SUBJECTS = {
    "cryovial": "item",
    "tube": "item",
    "product_bag": "item",
    "box": "box",
    "shipment": "shipment",
}
#: Which items a template of each item kind is for (Item.kind values).
ITEM_KINDS = {
    "cryovial": ("aliquot",),
    "tube": ("aliquot",),
    "product_bag": ("product_bag", "apheresis"),
}

#: Patient identifiers: only on labels that the bedside check needs (DOMAIN.md §9).
PATIENT_KEYS = frozenset({"patient_name", "cpr", "birth_date"})
#: Never on a research or cryovial label: the patient identifiers, and the Chain of Identity,
#: which leads straight to the patient's treatment record.
NOT_ON_RESEARCH_LABELS = PATIENT_KEYS | {"coi"}

#: The content keys a field may name, per subject, with what they show (labels/README.md).
CONTENT_KEYS: dict[str, dict[str, str]] = {
    "item": {
        "code": "the identifier (DIN in groups, or local ID) with its boxed check character",
        "kind": "apheresis, product bag or aliquot",
        "pseudonym": "the patient's pseudonym",
        "material": "material type (PBMC, plasma, CAR-T product, ...)",
        "timepoint": "follow-up timepoint (baseline, D7, M3, ...)",
        "collected": "collection date (local)",
        "n_of_total": "aliquot n/N",
        "quantity": "quantity and unit",
        "product_name": "the CAR-T product of the episode",
        "lot": "product lot number",
        "expiry": "expiry date and time (local)",
        "coi": "Chain of Identity with its boxed check character",
        "site": "code of the site holding the item",
        "patient_name": "patient's name (bag labels only)",
        "cpr": "patient's CPR or replacement identifier (bag labels only)",
        "birth_date": "patient's date of birth (bag labels only)",
    },
    "box": {
        "code": "the box code",
        "label": "the box's own label text",
        "path": "unit / rack / box",
        "box_type": "grid (9x9, 10x10, ...) or container capacity",
        "contents": "how full it is and with what",
        "site": "code of the site",
        "temperature": "the unit's temperature class",
    },
    "shipment": {
        "code": "the shipment code",
        "from_site": "sending site (code and name)",
        "to_site": "receiving site (code and name)",
        "route": "from -> to, as site codes",
        "conditions": "shipping conditions",
        "item_count": "number of bags and tubes",
        "courier": "courier",
        "tracking": "courier's tracking reference",
        "logger": "temperature logger reference",
    },
}
#: Content a barcode may encode, per subject.
BARCODE_KEYS = {"item": ("code", "coi"), "box": ("code",), "shipment": ("code",)}
#: A field named ``text`` prints its own ``text`` (fixed wording such as a storage statement).
FIXED_TEXT = "text"
