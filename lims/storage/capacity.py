"""Capacity report: how full each storage unit, rack and box is, and where there is room.

Two queries whatever the size of the site: one counts the items per box with GROUP BY (never
an item loaded), one lists the units and racks so that empty ones show too. The roll-up from
boxes to racks, units and box types is plain arithmetic over the box rows.

What counts:
- *Used* is every item holding a place in the box (``Item.box_id``), whatever its state: a
  checked-out tube keeps its position until it comes back.
- *Positions* are the grid of the box type, or the capacity of a container without a grid
  (canister, bin, dry shipper).
- *Free* counts only places that take material: a box or unit out of use (``active`` false)
  has no free places, although its positions and what it still holds are counted. So for a
  unit with an out-of-use box, free is less than positions minus used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lims.auth.models import Role, Site, User
from lims.auth.services import require_role, site_by_code
from lims.custody.models import Item
from lims.errors import Forbidden, ValidationError
from lims.storage.domain import BOX_TYPES, TemperatureClass
from lims.storage.models import Box, Rack, RackKind, StorageUnit, UnitType
from lims.storage.services import unit_by_code

#: Who reads storage reports; researchers see no freezer layout.
STAFF = (Role.TECHNICIAN, Role.MANAGER, Role.ADMIN)
#: The box type shown for a container with a capacity and no grid.
CONTAINER = "container"


def require_site_access(actor: User | None, site_id: int, site_code: str) -> None:
    """Technicians see their own site's storage; managers, administrators and the command
    line (``actor=None``) see every site's."""
    if actor is not None and actor.role is Role.TECHNICIAN and actor.site_id != site_id:
        raise Forbidden(
            f"{site_code} is another site; technicians see the storage of their own site "
            f"({actor.site.code})."
        )


@dataclass
class Fill:
    """Counts of a group of boxes (a rack, a unit, a box type, everything)."""

    boxes: int = 0
    positions: int = 0
    used: int = 0
    free: int = 0

    def add(self, box: BoxFill) -> None:
        self.boxes += 1
        self.positions += box.size
        self.used += box.used
        self.free += box.free

    @property
    def fill_percent(self) -> float:
        return round(100 * self.used / self.positions, 1) if self.positions else 0.0


@dataclass(frozen=True)
class BoxFill:
    id: int
    code: str
    label: str
    #: A key of BOX_TYPES, or ``CONTAINER`` for a container with a capacity.
    box_type: str
    site_code: str
    unit_id: int
    unit_code: str
    rack_id: int | None
    rack_code: str | None
    size: int
    used: int
    #: The box and its unit are in use (take new material).
    in_use: bool

    @property
    def free(self) -> int:
        return max(self.size - self.used, 0) if self.in_use else 0

    @property
    def fill_percent(self) -> float:
        return round(100 * self.used / self.size, 1) if self.size else 0.0

    @property
    def path(self) -> str:
        return " / ".join(part for part in (self.unit_code, self.rack_code, self.code) if part)


@dataclass(frozen=True)
class RackFill:
    id: int
    code: str
    kind: RackKind
    ordinal: int
    unit_id: int
    unit_code: str
    fill: Fill


@dataclass(frozen=True)
class UnitFill:
    id: int
    code: str
    name: str
    site_code: str
    unit_type: UnitType
    temperature_class: TemperatureClass
    active: bool
    fill: Fill


@dataclass(frozen=True)
class TypeFree:
    """Free places of one box type in one unit."""

    site_code: str
    unit_code: str
    box_type: str
    fill: Fill


@dataclass(frozen=True)
class CapacityReport:
    units: list[UnitFill]
    racks: list[RackFill]
    boxes: list[BoxFill]
    free_by_type: list[TypeFree]
    total: Fill = field(default_factory=Fill)

    def unit(self, code: str) -> UnitFill | None:
        return next((unit for unit in self.units if unit.code == code), None)

    def rack(self, code: str) -> RackFill | None:
        return next((rack for rack in self.racks if rack.code == code), None)

    def racks_of(self, unit_id: int) -> list[RackFill]:
        return [rack for rack in self.racks if rack.unit_id == unit_id]

    def boxes_of(self, *, unit_id: int | None = None, rack_id: int | None = None) -> list[BoxFill]:
        """A unit's boxes (all, racked or not), or a rack's."""
        return [
            box
            for box in self.boxes
            if (unit_id is None or box.unit_id == unit_id)
            and (rack_id is None or box.rack_id == rack_id)
        ]

    def free_by_type_totals(self) -> dict[str, Fill]:
        """Free places per box type over every unit in the report."""
        totals: dict[str, Fill] = {}
        for line in self.free_by_type:
            total = totals.setdefault(line.box_type, Fill())
            total.boxes += line.fill.boxes
            total.positions += line.fill.positions
            total.used += line.fill.used
            total.free += line.fill.free
        return dict(sorted(totals.items()))


def _size(box_type: str | None, capacity: int | None) -> int:
    geometry = BOX_TYPES.get(box_type) if box_type else None
    return geometry.capacity if geometry else int(capacity or 0)


def _box_rows(session: Session, scope: Iterable) -> list[BoxFill]:
    used = func.count(Item.id)
    query = (
        select(
            Box.id,
            Box.code,
            Box.label,
            Box.box_type,
            Box.capacity,
            Box.active,
            Box.rack_id,
            StorageUnit.id.label("unit_id"),
            StorageUnit.code.label("unit_code"),
            StorageUnit.active.label("unit_active"),
            Rack.code.label("rack_code"),
            Site.code.label("site_code"),
            used.label("used"),
        )
        .select_from(Box)
        .join(StorageUnit, Box.unit_id == StorageUnit.id)
        .join(Site, StorageUnit.site_id == Site.id)
        .outerjoin(Rack, Box.rack_id == Rack.id)
        .outerjoin(Item, Item.box_id == Box.id)
        .where(*scope)
        # Grouping by each table's primary key is enough: the other columns depend on it.
        .group_by(Box.id, StorageUnit.id, Rack.id, Site.id)
        .order_by(*box_order())
    )
    return [
        BoxFill(
            id=row.id,
            code=row.code,
            label=row.label or "",
            box_type=row.box_type or CONTAINER,
            site_code=row.site_code,
            unit_id=row.unit_id,
            unit_code=row.unit_code,
            rack_id=row.rack_id,
            rack_code=row.rack_code,
            size=_size(row.box_type, row.capacity),
            used=int(row.used),
            in_use=bool(row.active and row.unit_active),
        )
        for row in session.execute(query)
    ]


def capacity_report(
    session: Session, *, site_id: int | None = None, unit_id: int | None = None
) -> CapacityReport:
    """Fill per unit, rack and box and free places per box type, for one site, one unit or
    (both None) the whole network. Units are ordered by site and code, racks by their place in
    the unit, boxes by rack and place; boxes standing in no rack come after the racked ones."""
    scope = []
    if site_id is not None:
        scope.append(StorageUnit.site_id == site_id)
    if unit_id is not None:
        scope.append(StorageUnit.id == unit_id)
    boxes = _box_rows(session, scope)

    layout = session.execute(
        select(
            StorageUnit.id,
            StorageUnit.code,
            StorageUnit.name,
            StorageUnit.unit_type,
            StorageUnit.temperature_class,
            StorageUnit.active,
            Site.code.label("site_code"),
            Rack.id.label("rack_id"),
            Rack.code.label("rack_code"),
            Rack.kind.label("rack_kind"),
            Rack.ordinal.label("rack_ordinal"),
        )
        .join(Site, StorageUnit.site_id == Site.id)
        .outerjoin(Rack, Rack.unit_id == StorageUnit.id)
        .where(*scope)
        .order_by(Site.code, StorageUnit.code, Rack.ordinal, Rack.code)
    ).all()

    unit_fill: dict[int, Fill] = {}
    rack_fill: dict[int, Fill] = {}
    type_fill: dict[tuple[str, str, str], Fill] = {}
    total = Fill()
    for box in boxes:
        unit_fill.setdefault(box.unit_id, Fill()).add(box)
        if box.rack_id is not None:
            rack_fill.setdefault(box.rack_id, Fill()).add(box)
        type_fill.setdefault((box.site_code, box.unit_code, box.box_type), Fill()).add(box)
        total.add(box)

    units: dict[int, UnitFill] = {}
    racks: list[RackFill] = []
    for row in layout:
        if row.id not in units:
            units[row.id] = UnitFill(
                id=row.id,
                code=row.code,
                name=row.name,
                site_code=row.site_code,
                unit_type=row.unit_type,
                temperature_class=row.temperature_class,
                active=row.active,
                fill=unit_fill.get(row.id, Fill()),
            )
        if row.rack_id is not None:
            racks.append(
                RackFill(
                    id=row.rack_id,
                    code=row.rack_code,
                    kind=row.rack_kind,
                    ordinal=row.rack_ordinal,
                    unit_id=row.id,
                    unit_code=row.code,
                    fill=rack_fill.get(row.rack_id, Fill()),
                )
            )
    free_by_type = [
        TypeFree(site_code=site, unit_code=unit, box_type=box_type, fill=fill)
        for (site, unit, box_type), fill in sorted(type_fill.items())
    ]
    return CapacityReport(list(units.values()), racks, boxes, free_by_type, total)


def capacity_for(
    session: Session,
    *,
    actor: User | None,
    site_code: str | None = None,
    unit_code: str | None = None,
) -> tuple[CapacityReport, Site | None, StorageUnit | None]:
    """The report a person may see: technicians their own site's; managers and administrators
    any site's (their own when none is named; ``site_code="*"`` for the whole network).
    Returns the report with the site and unit it covers (None: the network / every unit)."""
    require_role(actor, *STAFF)
    unit = unit_by_code(session, unit_code) if unit_code else None
    site: Site | None
    if unit is not None:
        site = unit.site
        if site_code and site_code.strip() != "*" and site_code.strip().upper() != site.code:
            raise ValidationError(f"{unit.code} is at {site.code}, not {site_code}.", field="unit")
    elif site_code and site_code.strip() == "*":
        if actor is not None and actor.role is Role.TECHNICIAN:
            raise Forbidden("Technicians see the storage of their own site only.")
        site = None
    elif site_code:
        site = site_by_code(session, site_code)
    else:
        site = actor.site if actor is not None else None
    if site is not None:
        require_site_access(actor, site.id, site.code)
    report = capacity_report(
        session, site_id=site.id if site else None, unit_id=unit.id if unit else None
    )
    return report, site, unit


def box_order() -> list[Any]:
    """The order of boxes in the fill table and the exports: site, unit, the boxes in racks
    (by rack) before the loose ones, then the box. Box codes are unique, so no two boxes
    tie."""
    return [
        Site.code,
        StorageUnit.code,
        Box.rack_id.is_(None),
        Rack.ordinal,
        Rack.code,
        Box.ordinal,
        Box.code,
    ]
