"""Importing a freezer layout: storage units, racks and boxes from one file, all or nothing.

The file has one row per box (see :data:`COLUMNS` and ``docs/imports.md``). A unit or rack named
on many rows is created once; its name, type, temperature class, kind and place must then be
the same on every row where they are filled in (a blank cell means "as above"). A unit or rack
that exists already may be named to extend it, with the same attributes; a box code that exists
already is an error. Every row is checked first and every problem reported with its row and
column; only a file without problems is written, in one transaction with an audit row for each
unit, rack and box created, under the reason "layout import <file>: <reason>".

The checks are those of ``lims.storage.services`` (codes, box types, capacities, places in the
unit, the manager's own site); its ``create_*`` functions commit one by one, so they are not
called here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.errors import Conflict, ValidationError
from lims.imports import workbook
from lims.imports.tables import MAX_ROWS, Column, Problem, Row, read_table
from lims.imports.values import CellError, whole_number
from lims.storage import services as storage
from lims.storage.domain import BOX_TYPES, TemperatureClass
from lims.storage.models import Box, Rack, RackKind, StorageUnit, UnitType

COLUMNS: tuple[Column, ...] = (
    Column("site", False, "Your site's code. Optional; if filled in it must be your site.", "RH"),
    Column("unit_code", True, "Code of the storage unit (printed on its label).", "RH-LN2-1"),
    Column("unit_name", False, "Name of the unit; needed on the first row of a new unit.",
           "LN2 tank 1, room 2.14"),
    Column("unit_type", False, f"One of {', '.join(UnitType)}; needed for a new unit.",
           "ln2_tank"),
    Column("temperature_class", False,
           f"One of {', '.join(TemperatureClass)} (or -150, -80, -20, 2-8, ln2, room); "
           "needed for a new unit.", "ln2_vapour"),
    Column("rack_code", False, "Code of the rack, tower, shelf or drawer the box stands in "
           "(blank: the box stands directly in the unit).", "RH-LN2-1-T1"),
    Column("rack_kind", False, f"One of {', '.join(RackKind)} (default rack).", "tower"),
    Column("rack_ordinal", False, "The rack's place in the unit, 1-999 (default 1).", "1"),
    Column("box_code", True, "Code of the box (printed on its label). Blank: the row only "
           "creates its unit and rack.", "RH-BOX-0001"),
    Column("box_type", False, f"A box with positions: one of {', '.join(BOX_TYPES)}. "
           "Leave blank for a container without positions.", "9x9"),
    Column("capacity", False, "A container without positions (canister, bin): how many "
           "items it takes, 1-1000. Leave blank for a box with a box type.", ""),
    Column("box_label", False, "Free text shown with the box (optional).", "PBMC study X"),
    Column("box_ordinal", False, "The box's place in its rack, 1-999 (default 1).", "1"),
)  # fmt: skip

#: The unit's code column is shorter than the 40 characters a storage code may have.
UNIT_CODE_LENGTH = StorageUnit.__table__.c.code.type.length

#: Temperature classes as a lab writes them, beside the stored values.
TEMPERATURE_WORDS = {
    "ln2": TemperatureClass.LN2_VAPOUR,
    "-150": TemperatureClass.MINUS_150,
    "-80": TemperatureClass.MINUS_80,
    "-20": TemperatureClass.MINUS_20,
    "2-8": TemperatureClass.FRIDGE,
    "+2-+8": TemperatureClass.FRIDGE,
    "room": TemperatureClass.ROOM,
}


@dataclass
class LayoutReport:
    """What the import created (or, in a dry run, would create), and every problem found."""

    dry_run: bool
    units: list[str] = field(default_factory=list)
    racks: list[str] = field(default_factory=list)
    boxes: list[str] = field(default_factory=list)
    #: Units and racks that exist already and are extended by the file.
    existing: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def written(self) -> bool:
        return self.ok and not self.dry_run


@dataclass
class _Unit:
    row: int
    code: str
    name: str = ""
    unit_type: UnitType | None = None
    temperature_class: TemperatureClass | None = None
    existing: StorageUnit | None = None
    #: Its first row had problems: later rows are not compared with it.
    broken: bool = False


@dataclass
class _Rack:
    row: int
    code: str
    unit_code: str
    kind: RackKind = RackKind.RACK
    ordinal: int = 1
    existing: Rack | None = None
    broken: bool = False


@dataclass
class _Box:
    row: int
    code: str
    unit_code: str
    rack_code: str | None
    box_type: str | None
    capacity: int | None
    label: str
    ordinal: int


@dataclass
class _Plan:
    units: dict[str, _Unit] = field(default_factory=dict)
    racks: dict[str, _Rack] = field(default_factory=dict)
    boxes: dict[str, _Box] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


class _RowCheck:
    """The problems of one row, added to the plan's list as they are found."""

    def __init__(self, plan: _Plan, row: Row) -> None:
        self.plan, self.row = plan, row

    def problem(self, column: str | None, message: str) -> None:
        self.plan.problems.append(Problem(self.row.number, column, message))

    def code(self, column: str) -> str | None:
        try:
            return storage._code(self.row.get(column), column)
        except ValidationError as exc:
            self.problem(column, exc.message)
            return None

    def choice(self, column: str, enum: type[StrEnum], words: dict | None = None) -> Any:
        text = self.row.get(column)
        key = "".join(text.lower().replace("−", "-").replace("–", "-").split())
        key = key.replace("°c", "").replace("°", "")
        for member in enum:
            if key in (member.value, member.value.replace("_", "")):
                return member
        if words and key in words:
            return words[key]
        self.problem(column, f"'{text}' is not one of {', '.join(enum)}.")
        return None

    def number(self, column: str, *, low: int, high: int, default: int | None) -> int | None:
        text = self.row.get(column)
        if not text:
            return default
        try:
            return whole_number(text, low=low, high=high)
        except CellError as exc:
            self.problem(column, exc.message)
            return None


def layout_template(format: str) -> bytes:
    """The import template: CSV (the header) or XLSX (the header and a help sheet)."""
    return workbook.template(COLUMNS, format, sheet="layout")


def import_layout_file(
    session: Session,
    *,
    actor: User | None,
    data: bytes,
    filename: str,
    dry_run: bool,
    reason: str = "",
    max_rows: int = MAX_ROWS,
) -> LayoutReport:
    """Read the uploaded CSV/XLSX file and import it (the role is checked before reading)."""
    require_role(actor, Role.MANAGER)
    rows = read_table(data, filename=filename, columns=COLUMNS, max_rows=max_rows)
    return import_layout(
        session, actor=actor, rows=rows, dry_run=dry_run, filename=filename, reason=reason
    )


def import_layout(
    session: Session,
    *,
    actor: User | None,
    rows: list[Row],
    dry_run: bool,
    filename: str = "",
    reason: str = "",
) -> LayoutReport:
    """Check every row; unless ``dry_run`` or a problem was found, create it all at once."""
    require_role(actor, Role.MANAGER)
    if actor is None:
        raise ValidationError("A layout is imported by a named manager.")
    plan = _Plan()
    for row in rows:
        _check_row(session, actor, plan, row)
    report = LayoutReport(
        dry_run=dry_run,
        units=[u.code for u in plan.units.values() if u.existing is None],
        racks=[r.code for r in plan.racks.values() if r.existing is None],
        boxes=list(plan.boxes),
        existing=[p.code for p in [*plan.units.values(), *plan.racks.values()] if p.existing],
        problems=plan.problems,
    )
    if dry_run or not report.ok:
        session.rollback()  # nothing was added; this ends the reading transaction
        return report
    why = f"layout import {filename or '(unnamed file)'}"
    if reason.strip():
        why += f": {reason.strip()[:500]}"
    try:
        _write(session, actor, plan, why)
        session.commit()
    except IntegrityError:  # a code taken by someone else since the check
        session.rollback()
        raise Conflict(
            "A unit, rack or box with one of these codes was created by someone else at the "
            "same moment. Nothing was imported; run the import again to see which."
        ) from None
    return report


def _check_row(session: Session, actor: User, plan: _Plan, row: Row) -> None:
    check = _RowCheck(plan, row)
    site = row.get("site")
    if site and site.upper() != actor.site.code:
        check.problem(
            "site", f"You import for your own site {actor.site.code}, not for {site}."
        )
    unit = _check_unit(session, actor, check)
    rack = _check_rack(session, check, unit)
    _check_box(session, check, unit, rack)


def _check_unit(session: Session, actor: User, check: _RowCheck) -> _Unit | None:
    code = check.code("unit_code")
    if code is None:
        return None
    if len(code) > UNIT_CODE_LENGTH:
        check.problem("unit_code", f"A unit code is at most {UNIT_CODE_LENGTH} characters.")
        return None
    row = check.row
    given = {
        "unit_name": row.get("unit_name"),
        "unit_type": check.choice("unit_type", UnitType) if row.get("unit_type") else None,
        "temperature_class": (
            check.choice("temperature_class", TemperatureClass, TEMPERATURE_WORDS)
            if row.get("temperature_class")
            else None
        ),
    }
    known = check.plan.units.get(code)
    if known is None:
        known = _Unit(row.number, code)
        check.plan.units[code] = known
        existing = session.scalar(select(StorageUnit).where(StorageUnit.code == code))
        if existing is None:
            known.broken = _define_unit(check, known, given)
            return known  # defined by this row: nothing to compare with
        known.existing, known.name = existing, existing.name
        known.unit_type, known.temperature_class = existing.unit_type, existing.temperature_class
        if existing.site_id != actor.site_id:
            check.problem("unit_code", f"{code} is at {existing.site.code}, not your site.")
            known.broken = True
        elif not existing.active:
            check.problem("unit_code", f"{code} is out of use; it takes nothing new.")
            known.broken = True
    if not known.broken:
        _same(check, f"unit {code}", known.row, known.existing is not None, {
            "unit_name": (given["unit_name"], known.name),
            "unit_type": (given["unit_type"], known.unit_type),
            "temperature_class": (given["temperature_class"], known.temperature_class),
        })  # fmt: skip
    return known


def _define_unit(check: _RowCheck, unit: _Unit, given: dict) -> bool:
    """A new unit from its first row; True when the row does not define it fully."""
    before = len(check.plan.problems)
    name = given["unit_name"]
    if not name:
        check.problem("unit_name", f"Give the name of the new unit {unit.code}.")
    elif len(name) > 100:
        check.problem("unit_name", "A unit name is at most 100 characters.")
    for column in ("unit_type", "temperature_class"):
        if not check.row.get(column):
            what = column.replace("_", " ")
            check.problem(column, f"Give the {what} of the new unit {unit.code}.")
    unit.name, unit.unit_type = name, given["unit_type"]
    unit.temperature_class = given["temperature_class"]
    return len(check.plan.problems) > before or None in (unit.unit_type, unit.temperature_class)


def _same(check: _RowCheck, what: str, first_row: int, existing: bool, pairs: dict) -> None:
    """Problems for attributes given on this row that differ from the unit's or rack's."""
    where = "in the database" if existing else f"on row {first_row}"
    for column, (given, known) in pairs.items():
        if given not in (None, "") and given != known:
            shown = known.value if isinstance(known, StrEnum) else known
            check.problem(column, f"{what} is {column.replace('_', ' ')} '{shown}' {where}.")


def _check_rack(session: Session, check: _RowCheck, unit: _Unit | None) -> _Rack | None:
    row = check.row
    if not row.get("rack_code"):
        for column in ("rack_kind", "rack_ordinal"):
            if row.get(column):
                check.problem(column, "Filled in, but the row names no rack_code.")
        return None
    code = check.code("rack_code")
    kind = check.choice("rack_kind", RackKind) if row.get("rack_kind") else None
    ordinal = check.number("rack_ordinal", low=1, high=999, default=None)
    if code is None or unit is None:
        return None
    known = check.plan.racks.get(code)
    if known is None:
        existing = session.scalar(select(Rack).where(Rack.code == code))
        known = _Rack(row.number, code, unit.code, existing=existing)
        if existing is not None:
            known.unit_code, known.kind, known.ordinal = (
                existing.unit.code,
                existing.kind,
                existing.ordinal,
            )
        else:
            known.kind, known.ordinal = kind or RackKind.RACK, ordinal or 1
            known.broken = bool(row.get("rack_kind") and kind is None)
        check.plan.racks[code] = known
    if known.unit_code != unit.code:
        where = "in the database" if known.existing else f"on row {known.row}"
        check.problem("rack_code", f"Rack {code} is in unit {known.unit_code} {where}.")
        return None
    if not known.broken:
        _same(check, f"rack {code}", known.row, known.existing is not None, {
            "rack_kind": (kind, known.kind),
            "rack_ordinal": (ordinal, known.ordinal),
        })  # fmt: skip
    return known


def _check_box(
    session: Session, check: _RowCheck, unit: _Unit | None, rack: _Rack | None
) -> None:
    row = check.row
    if not row.get("box_code"):
        for column in ("box_type", "capacity", "box_label", "box_ordinal"):
            if row.get(column):
                check.problem("box_code", f"The row gives a {column.replace('_', ' ')} but no box.")
                return
        return
    code = check.code("box_code")
    box_type = "".join(row.get("box_type").lower().replace("×", "x").split()) or None
    capacity = check.number("capacity", low=1, high=1000, default=None)
    ordinal = check.number("box_ordinal", low=1, high=999, default=1)
    label = row.get("box_label")
    if (box_type is None) == (not row.get("capacity")):
        check.problem(
            "box_type",
            "A box has a box type with positions (9x9, 10x10, 8x12, cassettes) or, for a "
            "canister or bin, a capacity: one of the two.",
        )
    elif box_type is not None and box_type not in BOX_TYPES:
        check.problem("box_type", f"A box type is one of {', '.join(BOX_TYPES)}.")
    if len(label) > 100:
        check.problem("box_label", "A box label is at most 100 characters.")
    if code is None:
        return
    if code in check.plan.boxes:
        check.problem("box_code", f"Box {code} is on row {check.plan.boxes[code].row} already.")
        return
    if session.scalar(select(Box.id).where(Box.code == code)) is not None:
        check.problem("box_code", f"A box {code} exists already.")
    if unit is None or (row.get("rack_code") and rack is None):
        return
    check.plan.boxes[code] = _Box(
        row.number,
        code,
        unit.code,
        rack.code if rack else None,
        box_type,
        capacity,
        label,
        ordinal or 1,
    )


def _write(session: Session, actor: User, plan: _Plan, reason: str) -> None:
    units: dict[str, StorageUnit] = {}
    for planned in plan.units.values():
        unit = planned.existing or StorageUnit(
            site_id=actor.site_id,
            code=planned.code,
            name=planned.name,
            unit_type=planned.unit_type,
            temperature_class=planned.temperature_class,
        )
        if planned.existing is None:
            session.add(unit)
            audit.record_created(session, unit, actor=actor, reason=reason)
        units[planned.code] = unit
    racks: dict[str, Rack] = {}
    for planned in plan.racks.values():
        rack = planned.existing or Rack(
            unit_id=units[planned.unit_code].id,
            code=planned.code,
            kind=planned.kind,
            ordinal=planned.ordinal,
        )
        if planned.existing is None:
            session.add(rack)
            audit.record_created(session, rack, actor=actor, reason=reason)
        racks[planned.code] = rack
    for planned in plan.boxes.values():
        box = Box(
            code=planned.code,
            label=planned.label,
            box_type=planned.box_type,
            capacity=planned.capacity,
            unit_id=units[planned.unit_code].id,
            rack_id=racks[planned.rack_code].id if planned.rack_code else None,
            ordinal=planned.ordinal,
        )
        session.add(box)
        audit.record_created(session, box, actor=actor, reason=reason)
