"""Importing an existing inventory: tubes already in a freezer, registered and stored at once.

For a biobank moving off spreadsheets. One row per tube (see :data:`COLUMNS` and
``docs/imports.md``); patients and episodes are registered first through the normal pages
(registration checks the CPR), and each row names its episode by its Chain of Identity. Only
aliquots are imported: bags have their own registration, with their lot and release.

Every row is checked first and every problem reported with its row and column. A dry run stops
there and writes nothing. A real run happens only for a file without problems, in one
transaction: for each row a new local identifier, the item with its registration custody event
and audit row, then its STORE step through ``perform_action`` into its box and position. The
reason of every step names the file and the manager's reason, and the registration reason also
keeps the tube's former label, so a search of the audit trail finds the tube by its old name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody.domain import Action, Kind
from lims.custody.models import CELL_TYPES, TYPES_BY_KIND, UNITS, Item, MaterialType
from lims.custody.numbering import new_local_id
from lims.custody.services import (
    Move,
    add_item,
    check_quantity,
    commit_or_conflict,
    custody_settings,
    perform_action,
)
from lims.db import utcnow
from lims.errors import Conflict, DomainError, ValidationError
from lims.imports import workbook
from lims.imports.tables import MAX_ROWS, Column, Problem, Row, column_key, read_table
from lims.imports.values import CellError, decimal_number, local_datetime, whole_number
from lims.localtime import site_zone
from lims.patients.models import Episode
from lims.patients.services import get_episode
from lims.storage.domain import PositionError, suitable
from lims.storage.models import Box
from lims.storage.services import location_of

ALIQUOT_TYPES = sorted(TYPES_BY_KIND[Kind.ALIQUOT])
COLUMNS: tuple[Column, ...] = (
    Column("coi", True, "Chain of Identity of the tube's treatment episode, with or without "
           "its check character. Register the patient and episode first.", "CHW123424000001"),
    Column("material_type", True, f"One of {', '.join(ALIQUOT_TYPES)}.", "pbmc"),
    Column("quantity", True, "How much the tube holds, > 0 (a decimal comma is fine: 1,5).",
           "1,5"),
    Column("unit", True, f"One of {', '.join(UNITS)} (ml, ul also understood).", "mL"),
    Column("cell_count", False, "Number of cells (cell material only), optional.", "5000000"),
    Column("timepoint", False, "Follow-up timepoint label, optional.", "D28"),
    Column("timepoint_day", False, "Day of the timepoint relative to infusion, optional.", "28"),
    Column("collected_at", True, "When the material was collected, local time: 2024-03-05, "
           "05-03-2024 or with a time, 2024-03-05 14:30.", "05-03-2024 09:15"),
    Column("box_code", True, "Code of the box or container it is in (at your site).",
           "RH-BOX-0001"),
    Column("position", False, "Its position in the box: A1, A01 or a number. Blank for a "
           "container without positions.", "A1"),
    Column("former_label", False, "The tube's identifier in the old spreadsheet (kept in the "
           "audit trail, searchable).", "PBMC-2019-044"),
    Column("thaw_count", False, "How often it was thawed and refrozen (default 0).", "0"),
    Column("kind", False, "Optional; only aliquot is imported.", "aliquot"),
)  # fmt: skip

#: Units as people type them, beside the stored ones.
UNIT_WORDS = {
    "ml": "mL", "µl": "µL", "μl": "µL", "ul": "µL", "µg": "µg", "μg": "µg", "ug": "µg",
    "cells": "cells",
}  # fmt: skip


@dataclass(frozen=True)
class PlannedItem:
    """One row's tube: where it goes and, once imported, its new identifier."""

    row: int
    box_code: str
    position: str
    material_type: MaterialType
    former_label: str
    #: "new" in a dry run; the new local identifier (with its check character) after import.
    code: str = "new"


@dataclass
class InventoryReport:
    dry_run: bool
    items: list[PlannedItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def written(self) -> bool:
        return self.ok and not self.dry_run


@dataclass
class _Tube:
    row: int
    episode: Episode
    material: MaterialType
    quantity: Decimal
    unit: str
    cell_count: int | None
    timepoint: str | None
    timepoint_day: int | None
    collected_at: datetime
    box: Box
    position: int | None
    former_label: str
    thaw_count: int


@dataclass
class _Lookups:
    """What the rows share, looked up once per file."""

    episodes: dict[str, Episode | str] = field(default_factory=dict)
    boxes: dict[str, Box | None] = field(default_factory=dict)
    #: Per box id: the positions taken in the database (index → the holder's code).
    taken: dict[int, dict[int, str]] = field(default_factory=dict)
    #: (box id, index) → the row of the file that uses it.
    used: dict[tuple[int, int], int] = field(default_factory=dict)
    #: Per box id without positions: how many places are filled (database + file so far).
    filled: dict[int, int] = field(default_factory=dict)


def inventory_template(format: str) -> bytes:
    """The import template: CSV (the header) or XLSX (the header and a help sheet)."""
    return workbook.template(COLUMNS, format, sheet="inventory")


def import_inventory_file(
    session: Session,
    *,
    actor: User | None,
    data: bytes,
    filename: str,
    dry_run: bool,
    reason: str = "",
    max_rows: int = MAX_ROWS,
) -> InventoryReport:
    """Read the uploaded CSV/XLSX file and import it (the role is checked before reading)."""
    require_role(actor, Role.MANAGER)
    rows = read_table(data, filename=filename, columns=COLUMNS, max_rows=max_rows)
    return import_inventory(
        session, actor=actor, rows=rows, dry_run=dry_run, reason=reason, filename=filename
    )


def import_inventory(
    session: Session,
    *,
    actor: User | None,
    rows: list[Row],
    dry_run: bool,
    reason: str = "",
    filename: str = "",
) -> InventoryReport:
    """Check every row; unless ``dry_run`` or a problem was found, import them all at once."""
    require_role(actor, Role.MANAGER)
    if actor is None:
        raise ValidationError("An inventory is imported by a named manager.")
    reason = (reason or "").strip()[:500]
    if not dry_run and not reason:
        raise ValidationError("Give the reason for the import.", field="reason")
    report = InventoryReport(dry_run=dry_run)
    lookups, tubes = _Lookups(), []
    for row in rows:
        tube = _check_row(session, actor, lookups, row, report.problems)
        if tube is not None:
            tubes.append(tube)
            position = tube.box.geometry.name(tube.position) if tube.position else ""
            report.items.append(
                PlannedItem(row.number, tube.box.code, position, tube.material, tube.former_label)
            )
    if dry_run or not report.ok:
        session.rollback()  # nothing was added; this ends the reading transaction
        return report
    why = f"inventory import {filename or '(unnamed file)'}: {reason}"
    try:
        codes = _import(session, actor, tubes, why)
        commit_or_conflict(session)
    except IntegrityError:  # the unique (box, position) index: a concurrent placement won
        session.rollback()
        raise Conflict(
            "A position in the file was filled by someone else at the same moment. Nothing "
            "was imported; run the import again to see which."
        ) from None
    report.items = [
        replace(item, code=code) for item, code in zip(report.items, codes, strict=True)
    ]
    return report


def _import(session: Session, actor: User, tubes: list[_Tube], why: str) -> list[str]:
    # Identifiers before audit rows: the counter is locked before the audit chain's head, in
    # the same order as every other registration, so two transactions never deadlock.
    digits = custody_settings()["local_id_digits"]
    codes = [new_local_id(session, actor.site, digits) for _ in tubes]
    for tube, (code, check) in zip(tubes, codes, strict=True):
        item = Item(
            code=code,
            check_character=check,
            kind=Kind.ALIQUOT,
            material_type=tube.material,
            episode=tube.episode,
            site=actor.site,
            quantity=tube.quantity,
            unit=tube.unit,
            cell_count=tube.cell_count,
            collected_at=tube.collected_at,
            timepoint=tube.timepoint,
            timepoint_day=tube.timepoint_day,
            thaw_count=tube.thaw_count,
        )
        registered = why + (f"; former label {tube.former_label}" if tube.former_label else "")
        add_item(session, actor=actor, item=item, reason=registered)
        perform_action(
            session,
            actor=actor,
            code=code,
            action=Action.STORE,
            reason=why,
            move=Move(
                location=location_of(tube.box, tube.position),
                box_id=tube.box.id,
                position=tube.position,
            ),
            commit=False,
        )
    return [code for code, _ in codes]


def _check_row(
    session: Session, actor: User, lookups: _Lookups, row: Row, problems: list[Problem]
) -> _Tube | None:
    """The row's tube, or None after adding every problem of the row to ``problems``."""
    before = len(problems)

    def problem(column: str, message: str) -> None:
        problems.append(Problem(row.number, column, message))

    def read(column: str, reader, *args, **options):
        try:
            return reader(row.get(column), *args, **options)
        except CellError as exc:
            problem(column, exc.message)
            return None

    if row.get("kind") and column_key(row.get("kind")) != "aliquot":
        problem("kind", "Only aliquots (tubes) are imported; bags are registered on their pages.")
    episode = _episode(session, lookups, row.get("coi"), problem)
    material = _material(row.get("material_type"), problem)
    unit = UNIT_WORDS.get(row.get("unit").lower().replace(" ", ""), row.get("unit"))
    if unit not in UNITS:
        problem("unit", f"The unit is one of {', '.join(UNITS)}.")
    quantity = read("quantity", decimal_number)
    if quantity is not None:
        try:
            quantity = check_quantity(quantity, UNITS[0])
        except ValidationError as exc:
            problem("quantity", exc.message)
    cell_count = None
    if row.get("cell_count"):
        cell_count = read("cell_count", whole_number, low=0, high=10**15)
        if material is not None and material not in CELL_TYPES:
            problem("cell_count", f"{material.label} has no cell count.")
    timepoint = row.get("timepoint") or None
    if timepoint and len(timepoint) > 16:
        problem("timepoint", "A timepoint label is at most 16 characters.")
    day = None
    if row.get("timepoint_day"):
        day = read("timepoint_day", whole_number, low=-3650, high=36500)
    collected_at = None
    if not row.get("collected_at"):
        problem("collected_at", "Give the date (and time, if known) of collection.")
    else:
        collected_at = read("collected_at", local_datetime, zone=site_zone(), now=utcnow())
    thaw_count = 0
    if row.get("thaw_count"):
        thaw_count = read("thaw_count", whole_number, low=0, high=99)
    former_label = row.get("former_label")
    if len(former_label) > 100:
        problem("former_label", "A former label is at most 100 characters.")
    if episode is not None and _held_and_refused(episode):
        problem("coi", "The patient withdrew consent: material on hold is not stored here.")
    box = _box(session, actor, lookups, row.get("box_code"), material, problem)
    position = _position(session, lookups, box, row, problem) if box is not None else None
    if len(problems) > before:
        return None
    return _Tube(
        row.number, episode, material, quantity, unit, cell_count, timepoint, day,
        collected_at, box, position, former_label, thaw_count,
    )  # fmt: skip


def _episode(session: Session, lookups: _Lookups, text: str, problem) -> Episode | None:
    coi = "".join(text.split()).upper()
    if not coi:
        problem("coi", "Give the Chain of Identity of the tube's treatment episode.")
        return None
    if coi not in lookups.episodes:
        try:
            lookups.episodes[coi] = get_episode(session, coi)
        except DomainError as exc:
            lookups.episodes[coi] = exc.message
    found = lookups.episodes[coi]
    if isinstance(found, str):
        problem("coi", found)
        return None
    return found


def _material(text: str, problem) -> MaterialType | None:
    key = column_key(text)
    for material in MaterialType:
        if key in (material.value, column_key(material.label)):
            if material not in TYPES_BY_KIND[Kind.ALIQUOT]:
                problem("material_type", f"{material.label} is not imported as a tube.")
                return None
            return material
    problem("material_type", f"'{text}' is not one of {', '.join(ALIQUOT_TYPES)}.")
    return None


def _held_and_refused(episode: Episode) -> bool:
    storage = current_app.config["LIMS"]["storage"]
    return episode.patient.consent_withdrawn_at is not None and not storage["store_held_material"]


def _box(
    session: Session,
    actor: User,
    lookups: _Lookups,
    text: str,
    material: MaterialType | None,
    problem,
) -> Box | None:
    code = text.strip().upper()
    if not code:
        problem("box_code", "Give the box the tube is in.")
        return None
    if code not in lookups.boxes:
        lookups.boxes[code] = session.scalar(select(Box).where(Box.code == code))
    box = lookups.boxes[code]
    if box is None:
        problem("box_code", f"No box {code}.")
        return None
    if box.unit.site_id != actor.site_id:
        problem("box_code", f"Box {code} is at {box.unit.site.code}; you work at "
                f"{actor.site.code}.")  # fmt: skip
        return None
    if not (box.active and box.unit.active):
        problem("box_code", f"{code} is out of use ({box.unit.code} takes nothing new).")
        return None
    why = suitable(material.value, box.unit.temperature_class) if material else None
    if why:
        problem("box_code", f"{box.unit.code} is the wrong temperature: {why}")
    return box


def _position(session: Session, lookups: _Lookups, box: Box, row: Row, problem) -> int | None:
    text = row.get("position")
    if box.geometry is None:
        if text:
            problem("position", f"{box.code} has no positions: leave the position blank.")
            return None
        if box.id not in lookups.filled:
            lookups.filled[box.id] = session.scalar(
                select(func.count()).select_from(Item).where(Item.box_id == box.id)
            )
        if lookups.filled[box.id] >= box.size:
            problem("box_code", f"{box.code} is full ({box.size} places).")
            return None
        lookups.filled[box.id] += 1
        return None
    if not text:
        problem("position", f"Give the position in {box.code} (A1, A01 or a number).")
        return None
    try:
        index = box.geometry.index(text)
    except PositionError as exc:
        problem("position", exc.message)
        return None
    if box.id not in lookups.taken:
        holders = session.execute(
            select(Item.position, Item.code).where(
                Item.box_id == box.id, Item.position.is_not(None)
            )
        )
        lookups.taken[box.id] = {position: code for position, code in holders}
    name = box.geometry.name(index)
    holder = lookups.taken[box.id].get(index)
    if holder is not None:
        problem("position", f"{box.code} {name} holds {holder} already.")
        return None
    first = lookups.used.setdefault((box.id, index), row.number)
    if first != row.number:
        problem("position", f"{box.code} {name} is given on row {first} already.")
        return None
    return index
