"""The freezers of a benchmark data set: units, racks and boxes per site, written in bulk, and
the cursor that hands out the next position as aliquots are generated.

Every box of a (site, temperature) group gets an equal share of that group's aliquots in
positions 1, 2, 3, ..., so every box is about equally full and the last places stay free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from benchmarks.bulk import AuditChain, BulkWriter, complete
from benchmarks.plan import BOXES_PER_RACK, GROUPS, HISTORY_DAYS, RACKS_PER_UNIT, Plan
from lims.storage.domain import BOX_TYPES
from lims.storage.models import Box, Rack, StorageUnit

if TYPE_CHECKING:
    from benchmarks.dataset import Actor

REASON = "generated benchmark data set"
#: In the order they are written: a box refers to its rack and unit.
STORAGE_TABLES = (StorageUnit.__table__, Rack.__table__, Box.__table__)


@dataclass
class BoxSlot:
    """A box as the item rows need it: its id, its path and how many aliquots it gets."""

    id: int
    path: str
    names: list[str]
    quota: int

    def location(self, position: int) -> str:
        """``lims.storage.services.location_of(box, position)`` for this box."""
        return f"{self.path} / {self.names[position - 1]}"


@dataclass
class Layout:
    slots: dict[tuple[int, str], list[BoxSlot]] = field(default_factory=dict)
    #: Per group: the box being filled and how many places of it are taken.
    cursor: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    box_count: int = 0

    def take(self, site: int, group: str) -> tuple[BoxSlot, int]:
        """The next position for an aliquot of this group at this site."""
        key = (site, group)
        cursor = self.cursor.setdefault(key, [0, 0])
        boxes = self.slots[key]
        while cursor[1] >= boxes[cursor[0]].quota:
            cursor[0], cursor[1] = cursor[0] + 1, 0
        cursor[1] += 1
        return boxes[cursor[0]], cursor[1]


def build_layout(
    session: Session,
    writer: BulkWriter,
    chain: AuditChain,
    plan: Plan,
    sites: list[int],
    managers: list[Actor],
) -> Layout:
    """Write every unit, rack and box of the plan (a manager of the site creates them);
    ``sites`` are the sites' ids in the plan's order."""
    ids = {table.name: writer.next_id(table) for table in STORAGE_TABLES}
    rows: dict[str, list[dict[str, Any]]] = {table.name: [] for table in STORAGE_TABLES}
    layout = Layout()
    created = plan.now - timedelta(days=HISTORY_DAYS + 60)

    def add(table: Any, entity: str, site: int, values: dict[str, Any]) -> int:
        values = complete(table, {"id": ids[table.name], **values})
        ids[table.name] += 1
        rows[table.name].append(values)
        chain.created(
            at=plan.now, actor=managers[site].audit, entity=entity, values=values, reason=REASON
        )
        return values["id"]

    for (site, stem), count in sorted(plan.boxes.items()):
        group, code = GROUPS[stem], plan.sites[site].code
        geometry = BOX_TYPES[group.box_type]
        names = geometry.names()
        aliquots = plan.aliquots[(site, stem)]
        per_box, more = divmod(aliquots, count)
        slots = []
        per_unit = RACKS_PER_UNIT * BOXES_PER_RACK
        for number in range(count):
            unit_number, in_unit = divmod(number, per_unit)
            rack_number, ordinal = divmod(in_unit, BOXES_PER_RACK)
            unit_code = f"{code}-{group.unit_stem}-{unit_number + 1:02d}"
            rack_code = f"{unit_code}-R{rack_number + 1:02d}"
            if in_unit == 0:
                unit_id = add(
                    StorageUnit.__table__,
                    "storage_unit",
                    site,
                    {
                        "site_id": sites[site],
                        "code": unit_code,
                        "name": f"{group.unit_name} {unit_number + 1}",
                        "unit_type": "freezer",
                        "temperature_class": group.temperature.value,
                        "active": True,
                        "created_at": created,
                        "version": 1,
                    },
                )
            if ordinal == 0:
                rack_id = add(
                    Rack.__table__,
                    "storage_rack",
                    site,
                    {
                        "unit_id": unit_id,
                        "code": rack_code,
                        "kind": "rack",
                        "ordinal": rack_number + 1,
                        "version": 1,
                    },
                )
            box_code = f"{code}-{stem}-{number + 1:05d}"
            box_id = add(
                Box.__table__,
                "storage_box",
                site,
                {
                    "code": box_code,
                    "label": "",
                    "box_type": group.box_type,
                    "capacity": None,
                    "unit_id": unit_id,
                    "rack_id": rack_id,
                    "ordinal": ordinal + 1,
                    "active": True,
                    "version": 1,
                },
            )
            quota = per_box + (1 if number < more else 0)
            path = f"{unit_code} / {rack_code} / {box_code}"
            slots.append(BoxSlot(box_id, path, names, quota))
        layout.slots[(site, stem)] = slots
        layout.box_count += count
    if any(rows.values()):
        for table in STORAGE_TABLES:
            writer.write(table, rows[table.name])
        chain.flush(writer)
        session.commit()
    return layout
