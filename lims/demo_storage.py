"""The demo network's freezers: at every site an LN2 tank for bags, a -150 °C freezer for PBMC
and a -80 °C freezer for plasma and serum, set up by the site's biobank manager through the
storage services (so the audit trail shows who built them), and the place each kind of demo
material goes to."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lims.auth.models import User
from lims.custody.models import Item
from lims.storage import services as storage
from lims.storage.models import Box, StorageUnit

#: (unit suffix, name, unit type, temperature, rack kind, racks, boxes per rack, box type,
#:  box code stem) — box codes are SITE-STEM-nn.
LAYOUT = [
    ("LN2-1", "LN2 tank 1", "ln2_tank", "ln2_vapour", "tower", 3, 4, "cassette-5", "CAS"),
    ("F150-1", "-150 °C freezer 1", "freezer", "minus_150", "rack", 2, 3, "9x9", "PBMC"),
    ("F80-1", "-80 °C freezer 1", "freezer", "minus_80", "rack", 2, 3, "9x9", "PL"),
]

#: Which box stem each material type goes to.
BOX_FOR = {
    "leukapheresis": "CAS",
    "car_t_product": "CAS",
    "pbmc": "PBMC",
    "plasma": "PL",
    "serum": "PL",
}


def build_freezers(session: Session, manager: User) -> None:
    """The layout at the manager's site, unless it has storage already."""
    site = manager.site.code
    if session.scalar(select(StorageUnit.id).where(StorageUnit.site_id == manager.site_id)):
        return
    for suffix, name, unit_type, temperature, kind, racks, per_rack, box_type, stem in LAYOUT:
        unit = f"{site}-{suffix}"
        storage.create_unit(
            session,
            actor=manager,
            code=unit,
            name=name,
            unit_type=unit_type,
            temperature_class=temperature,
        )
        number = 0
        for rack_number in range(1, racks + 1):
            rack = f"{unit}-{kind[0].upper()}{rack_number}"
            storage.create_rack(
                session, actor=manager, unit_code=unit, code=rack, kind=kind, ordinal=rack_number
            )
            for ordinal in range(1, per_rack + 1):
                number += 1
                storage.create_box(
                    session,
                    actor=manager,
                    code=f"{site}-{stem}-{number:02d}",
                    unit_code=unit,
                    rack_code=rack,
                    box_type=box_type,
                    ordinal=ordinal,
                )


def box_for(session: Session, site: str, material_type: str) -> str:
    """The first box at the site for this material that has a free place."""
    stem = BOX_FOR[material_type]
    boxes = session.scalars(
        select(Box).where(Box.code.like(f"{site}-{stem}-%")).order_by(Box.code)
    )
    for box in boxes:
        used = session.scalar(select(func.count()).select_from(Item).where(Item.box_id == box.id))
        if used < box.size:
            return box.code
    raise RuntimeError(f"the demo freezers of {site} are full")  # the demo stores far less
