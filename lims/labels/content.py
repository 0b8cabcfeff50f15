"""What one label says: its text values and its barcode data, from an item, box or shipment.

The builders fill only the content keys the template names. Patient identifiers are fetched
only when the template asks for them (never for a research or cryovial template: the loader
refuses those) and only through ``reveal_identity``, which checks that the person may see who
the patient is and writes the view to the audit trail. Labels are printed by bench staff at
the site where the material is; a researcher never prints one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from lims import identifiers
from lims.errors import Forbidden, ValidationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from lims.auth.models import User
    from lims.custody.models import Item
    from lims.labels.templates import LabelTemplate
    from lims.shipments.models import Shipment
    from lims.storage.models import Box


@dataclass(frozen=True)
class LabelContent:
    """One label's text by content key (``<key>_check`` = its boxed check character)."""

    values: dict[str, str] = field(default_factory=dict)
    #: Exactly what the barcode encodes (a scan reads this back).
    barcode_data: str = ""
    #: A reprint says so on the label.
    reprint: bool = False


def _printer(actor: User | None, site_ids: tuple[int, ...], what: str) -> None:
    """Labels are printed by technicians and managers, at the site the thing is at."""
    from lims.auth.models import Role
    from lims.auth.services import require_role

    require_role(actor, Role.TECHNICIAN, Role.MANAGER)
    if actor is not None and actor.site_id not in site_ids:
        raise Forbidden(f"{what} is not at your site; its label is printed where it is.")


def _subject(template: LabelTemplate, subject: str, what: str) -> None:
    if template.subject != subject:
        raise ValidationError(
            f"Label template {template.name} is a {template.kind} label, not one for {what}.",
            field="template",
        )


def _local(value: datetime | None, fmt: str) -> str:
    from lims.localtime import site_zone

    return value.astimezone(site_zone()).strftime(fmt) if value else ""


def _quantity(quantity: Decimal | None, unit: str) -> str:
    if quantity is None:
        return ""
    number = format(quantity.normalize(), "f") if isinstance(quantity, Decimal) else str(quantity)
    return f"{number} {unit}"


def _only(template: LabelTemplate, values: dict[str, str]) -> dict[str, str]:
    """The values the template shows (and their check characters), nothing else."""
    keys = template.content_keys
    return {
        k: v for k, v in values.items() if k in keys or (k.endswith("_check") and k[:-6] in keys)
    }


def _din_barcode(din: str) -> str:
    """ISBT 128 data structure 001: '=' + DIN + flags ('00': no flag)."""
    return f"={din}00"


def item_content(
    session: Session,
    *,
    actor: User | None,
    item: Item,
    template: LabelTemplate,
    reprint: bool = False,
) -> LabelContent:
    """The label of a bag or tube; patient identifiers only if the template names them."""
    from lims.custody.services import visible_to
    from lims.patients.services import reveal_identity

    _subject(template, "item", "a bag or tube")
    if not template.labels_item_kind(item.kind.value):
        raise ValidationError(
            f"Label template {template.name} is a {template.kind} label; {item.code} is "
            f"{item.kind.label.lower()}.",
            field="template",
        )
    _printer(actor, (item.site_id,), item.code)
    if not visible_to(actor, item):  # pragma: no cover (researchers are refused above)
        raise Forbidden("You cannot see this item.")
    episode = item.episode
    values = {
        "code": identifiers.eye_readable(item.code, item.check_character),
        "code_check": item.check_character,
        "kind": item.kind.label,
        "pseudonym": episode.patient.pseudonym,
        "material": item.material_type.label,
        "timepoint": item.timepoint or "",
        "collected": _local(item.collected_at, "%Y-%m-%d"),
        "n_of_total": (
            f"{item.aliquot_number}/{item.aliquot_total}" if item.aliquot_number else ""
        ),
        "quantity": _quantity(item.quantity, item.unit),
        "product_name": episode.product_name,
        "lot": item.lot.lot_number if item.lot else "",
        "expiry": _local(item.expires_at, "%Y-%m-%d %H:%M"),
        "coi": identifiers.eye_readable(episode.coi, episode.coi_check),
        "coi_check": episode.coi_check,
        "site": item.site.code,
    }
    if template.patient_keys:
        # Checks that the actor may see who this is, and audits the view (it commits).
        identity = reveal_identity(session, actor=actor, pseudonym=episode.patient.pseudonym)
        values |= {
            "patient_name": identity.name,
            "cpr": identity.identifier,
            "birth_date": identity.birth_date.isoformat(),
        }
    if template.barcode.field == "coi":
        barcode = f"&/{episode.coi}"  # ISBT 128 data structure 040
    elif identifiers.looks_like_din(item.code):
        barcode = _din_barcode(item.code)
    else:
        barcode = item.code
    return LabelContent(_only(template, values), barcode, reprint)


def box_content(
    session: Session,
    *,
    actor: User | None,
    box: Box,
    template: LabelTemplate,
    reprint: bool = False,
) -> LabelContent:
    """The label of a box or container: its code, where it stands and what is in it."""
    from lims.storage.services import contents

    _subject(template, "box", "a box")
    _printer(actor, (box.unit.site_id,), f"Box {box.code}")
    items = contents(session, box)
    kinds: dict[str, int] = {}
    for item in items:
        kinds[item.material_type.label] = kinds.get(item.material_type.label, 0) + 1
    summary = ", ".join(f"{n} {name}" for name, n in sorted(kinds.items()))
    used = f"{len(items)} of {box.size}"
    values = {
        "code": box.code,
        "label": box.label,
        "path": box.path,
        "box_type": box.box_type or f"container of {box.capacity}",
        "contents": f"{used}: {summary}" if summary else f"{used}: empty",
        "site": box.unit.site.code,
        "temperature": box.unit.temperature_class.label,
    }
    return LabelContent(_only(template, values), box.code, reprint)


def shipment_content(
    session: Session,
    *,
    actor: User | None,
    shipment: Shipment,
    template: LabelTemplate,
    reprint: bool = False,
) -> LabelContent:
    """The label of a shipment: its code, from where to where, how and how many."""
    from lims.shipments.models import LineStatus

    _subject(template, "shipment", "a shipment")
    _printer(actor, (shipment.from_site_id, shipment.to_site_id), f"Shipment {shipment.code}")
    sent = [line for line in shipment.lines if line.status is not LineStatus.UNEXPECTED]
    count = len(sent)
    values = {
        "code": shipment.code,
        "from_site": f"{shipment.from_site.code} {shipment.from_site.name}",
        "to_site": f"{shipment.to_site.code} {shipment.to_site.name}",
        "route": f"{shipment.from_site.code} → {shipment.to_site.code}",
        "conditions": shipment.conditions.label,
        "item_count": f"{count} item{'' if count == 1 else 's'}",
        "courier": shipment.courier,
        "tracking": shipment.tracking_ref,
        "logger": shipment.logger_ref,
    }
    return LabelContent(_only(template, values), shipment.code, reprint)


# -- example data for `lims labels render --sample` -------------------------------------------

#: A DIN and a Chain of Identity with check characters, a local ID ending in its check
#: character, a box code with '-' and '.': every character class a code may hold.
SAMPLE_DIN = "W123425000123"
SAMPLE_COI = "CHW123425A1B2C3"
SAMPLE_LOCAL_ID = identifiers.format_local_id("RH", 42)
SAMPLE_BOX = "RH-F80-1.B07"
SAMPLE_SHIPMENT = "SHRH000012" + identifiers.mod37_2_check_character("SHRH000012")


def sample_values() -> dict[str, dict[str, str]]:
    """Example content by subject; no real person's data (the CPR is not a valid number)."""
    din_check = identifiers.din_check_character(SAMPLE_DIN)
    coi_check = identifiers.coi_check_character(SAMPLE_COI)
    local_check = SAMPLE_LOCAL_ID[-1]
    return {
        "item": {
            "code": SAMPLE_LOCAL_ID[:-1],
            "code_check": local_check,
            "kind": "Aliquot",
            "pseudonym": "P7K2M9XQ",
            "material": "PBMC",
            "timepoint": "M3",
            "collected": "2025-03-14",
            "n_of_total": "3/10",
            "quantity": "0.5 mL",
            "product_name": "Sample CAR-T product",
            "lot": "LOT-2025-017",
            "expiry": "2025-04-01 14:30",
            "coi": identifiers.eye_readable(SAMPLE_COI),
            "coi_check": coi_check,
            "site": "RH",
            "patient_name": "Sample Patient",
            "cpr": "010100-0000",
            "birth_date": "1900-01-01",
            "_din": identifiers.eye_readable(SAMPLE_DIN),
            "_din_check": din_check,
        },
        "box": {
            "code": SAMPLE_BOX,
            "label": "PBMC M3, CAR19-RH-01",
            "path": f"RH-F80-1 / RH-F80-1-R3 / {SAMPLE_BOX}",
            "box_type": "9x9",
            "contents": "42 of 81: 30 PBMC, 12 Plasma",
            "site": "RH",
            "temperature": "−80 °C",
        },
        "shipment": {
            "code": SAMPLE_SHIPMENT,
            "from_site": "RH Rigshospitalet",
            "to_site": "AUH Aarhus Universitetshospital",
            "route": "RH → AUH",
            "conditions": "Dry shipper (LN2)",
            "item_count": "12 items",
            "courier": "World Courier",
            "tracking": "WC-2025-00042",
            "logger": "LOG-7781",
        },
    }


def sample_content(template: LabelTemplate) -> LabelContent:
    """Example content for the template (``lims labels render --sample``)."""
    values = dict(sample_values()[template.subject])
    din_code, din_check = values.pop("_din", ""), values.pop("_din_check", "")
    if template.subject == "item" and template.kind == "product_bag":
        values |= {"code": din_code, "code_check": din_check, "kind": "Product bag"}
        values |= {"material": "CAR-T product", "quantity": "68 mL", "n_of_total": ""}
        barcode = _din_barcode(SAMPLE_DIN)
    elif template.subject == "item":
        barcode = SAMPLE_LOCAL_ID
    else:
        barcode = values["code"]
    if template.barcode.field == "coi":
        barcode = f"&/{SAMPLE_COI}"
    return LabelContent(_only(template, values), barcode)
