"""The read side of storage for the pages: box maps, fill levels, and finding a place by scan.

Queries are aggregated (one count per unit or box, one query for a box's content and its
holds) so a freezer page stays fast however much the freezer holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lims.custody.models import Hold, Item
from lims.custody.services import code_from_scan
from lims.errors import NotFound
from lims.storage.models import Box, Rack, StorageUnit, box_size


@dataclass
class Fill:
    used: int = 0
    size: int = 0

    @property
    def free(self) -> int:
        return max(self.size - self.used, 0)

    @property
    def percent(self) -> int:
        return round(100 * self.used / self.size) if self.size else 0


def used_in_boxes(session: Session, box_ids: list[int]) -> dict[int, int]:
    """How many places of each box are taken (a checked-out tube keeps its place)."""
    if not box_ids:
        return {}
    rows = session.execute(
        select(Item.box_id, func.count())
        .where(Item.box_id.in_(box_ids))
        .group_by(Item.box_id)
    )
    return {box_id: count for box_id, count in rows}


def fill_by_box(session: Session, boxes: list[Box]) -> dict[int, Fill]:
    used = used_in_boxes(session, [box.id for box in boxes])
    return {box.id: Fill(used.get(box.id, 0), box.size) for box in boxes}


def fill_by_unit(session: Session, units: list[StorageUnit]) -> dict[int, Fill]:
    """Used and total places per unit: two grouped queries, whatever the unit holds."""
    fills = {unit.id: Fill() for unit in units}
    if not units:
        return fills
    unit_ids = list(fills)
    used = session.execute(
        select(Box.unit_id, func.count(Item.id))
        .join(Item, Item.box_id == Box.id)
        .where(Box.unit_id.in_(unit_ids))
        .group_by(Box.unit_id)
    )
    for unit_id, count in used:
        fills[unit_id].used = count
    kinds = session.execute(
        select(Box.unit_id, Box.box_type, Box.capacity, func.count())
        .where(Box.unit_id.in_(unit_ids), Box.active.is_(True))
        .group_by(Box.unit_id, Box.box_type, Box.capacity)
    )
    for unit_id, box_type, capacity, count in kinds:
        size = box_size(box_type, capacity)
        fills[unit_id].size += size * count
    return fills


@dataclass
class Cell:
    index: int
    name: str
    item: Item | None = None
    on_hold: bool = False


@dataclass
class BoxMap:
    box: Box
    rows: list[list[Cell]] = field(default_factory=list)
    #: For a container without positions: its content in order.
    loose: list[Cell] = field(default_factory=list)
    used: int = 0

    @property
    def columns(self) -> int:
        return self.box.geometry.columns if self.box.geometry else 0

    @property
    def material_types(self) -> list:
        seen = {cell.item.material_type for row in self.rows for cell in row if cell.item}
        seen |= {cell.item.material_type for cell in self.loose if cell.item}
        return sorted(seen, key=lambda member: member.value)


def box_map(session: Session, box: Box) -> BoxMap:
    items = list(
        session.scalars(
            select(Item).where(Item.box_id == box.id).order_by(Item.position, Item.id)
        )
    )
    held = set()
    if items:
        held = set(
            session.scalars(
                select(Hold.item_id).where(
                    Hold.item_id.in_([item.id for item in items]), Hold.cleared_at.is_(None)
                )
            )
        )
    result = BoxMap(box, used=len(items))
    geometry = box.geometry
    if geometry is None:
        result.loose = [
            Cell(n, str(n), item, item.id in held) for n, item in enumerate(items, start=1)
        ]
        return result
    by_position = {item.position: item for item in items}
    cells = [
        Cell(index, geometry.name(index), by_position.get(index))
        for index in range(1, geometry.capacity + 1)
    ]
    for cell in cells:
        cell.on_hold = cell.item is not None and cell.item.id in held
    result.rows = [
        cells[row * geometry.columns : (row + 1) * geometry.columns]
        for row in range(geometry.rows)
    ]
    return result


@dataclass(frozen=True)
class Found:
    """What a scanned or typed code is: an item (in a box or not), a box, a rack or a unit."""

    kind: str
    code: str
    item: Item | None = None


def find_place(session: Session, text: str) -> Found:
    """Any identifier: a tube or bag (scanned or typed), or a box, rack or unit code."""
    raw = (text or "").strip()
    if not raw:
        raise NotFound("Scan or type an identifier or a storage code.")
    upper = raw.upper()
    for kind, model in (("box", Box), ("rack", Rack), ("unit", StorageUnit)):
        if session.scalar(select(model.id).where(model.code == upper)):
            return Found(kind, upper)
    code = code_from_scan(raw)  # refuses, naming it, a barcode that is no bag or tube
    item = session.scalar(select(Item).where(Item.code == code))
    if item is None:
        raise NotFound(f"Nothing has the identifier or storage code {raw[:60]}.")
    return Found("item", item.code, item)
