"""Freezer inventory export: one row per item that holds a place in a box, as CSV or XLSX.

Which items: every item with a place (``Item.box_id`` set), i.e. stored, reserved (it waits in
its box to be picked) and checked out (the tube is out, its position is kept for its return;
the row shows state "checked out" and that position).

Who sees what:
- Staff (technician, manager, administrator) get every column in ``STAFF_COLUMNS``: the
  location, the identifier, the material, the study and product, the Chain of Identity and
  the patient's pseudonym, timepoint, quantity, state, thaw count, and the dates stored and
  collected in local time. Never the CPR number, name or birth date: those stay in the
  identity vault, an inventory does not need them. Technicians export their own site only;
  managers and administrators any site (their own unless they name another, ``*`` for the
  whole network).
- Researchers get ``RESEARCHER_COLUMNS`` only, an allow-list: no Chain of Identity (it names
  the episode in every clinical system) and no calendar date or time at all (a collection
  date is a hospital visit); the timepoint and its day relative to infusion instead. The
  patient's pseudonym stays: it is the research-facing code the LIMS knows patients by
  (DOMAIN.md §2) and is printed on the research cryovials (§9), and it is what tells a
  researcher which tubes come from one subject. Only aliquots (researchers see no bags or
  apheresis), only stored ones (not reserved for someone, not checked out, not on hold), and
  only of patients with biobank consent and no consent withdrawal. Across the whole network.
- The command line (``actor=None``, the server's administrator) exports the whole network as
  staff, or as a researcher would see it when asked.

Memory stays bounded whatever the size of the freezer park: one SELECT with joins over Core
columns (no ORM object per row), read through a server-side cursor on PostgreSQL in chunks of
``CHUNK_ROWS``, each chunk shaped as a pandas DataFrame and written before the next is read
(``lims.exports.tables``); on PostgreSQL the CSV is instead written by the database with
``COPY (SELECT ...) TO STDOUT``, cell for cell the same (``lims.exports.copy_csv``). CSV
(UTF-8, comma-separated, one header line) goes out chunk by chunk, to a streamed HTTP
response or a file; XLSX is written with openpyxl's write-only workbook, chunk by chunk,
never a whole worksheet in memory. Dates are local time
(Europe/Copenhagen by default): ``YYYY-MM-DD HH:MM`` text in CSV, date cells in XLSX; the
quantity is a number in both. Every export writes one audit row: who, which filter, which
view, how many rows, and whether it ran to its end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Float, Select, String, cast, exists, select, type_coerce
from sqlalchemy.orm import Session

from lims.auth.models import Role, Site, User
from lims.auth.services import require_role, site_by_code
from lims.custody.domain import Kind, State
from lims.custody.models import Hold, Item, MaterialType
from lims.db import utcnow
from lims.errors import Forbidden, NotFound, ValidationError
from lims.exports import tables
from lims.exports.tables import ProgressCallback
from lims.localtime import site_zone
from lims.patients.models import Episode, Patient
from lims.storage.capacity import box_order, require_site_access
from lims.storage.models import Box, Rack, StorageUnit
from lims.storage.services import box_by_code, rack_by_code, unit_by_code

CHUNK_ROWS = 5_000
#: ``site="*"``: every site of the network (managers, administrators, researchers).
ALL_SITES = "*"
#: The states an item with a place can be in.
EXPORTED_STATES = (State.STORED, State.RESERVED, State.CHECKED_OUT)

LOCATION = ("site", "unit", "rack", "box", "position", "location")
STAFF_COLUMNS = (
    *LOCATION,
    "code", "check", "kind", "material_type", "study", "product", "coi", "pseudonym",
    "timepoint", "timepoint_day", "quantity", "quantity_unit", "state", "thaw_count",
    "stored_at", "collected_at",
)  # fmt: skip
#: The allow-list for researchers: nothing outside it ever leaves the database for them.
RESEARCHER_COLUMNS = (
    *LOCATION,
    "code", "check", "material_type", "study", "product", "pseudonym",
    "timepoint", "timepoint_day", "quantity", "quantity_unit", "state", "thaw_count",
)  # fmt: skip


@dataclass(frozen=True)
class InventoryFilter:
    """What to export; every field optional. Codes as scanned or typed (any case)."""

    site: str | None = None
    unit: str | None = None
    rack: str | None = None
    box: str | None = None
    #: The study is the episode's protocol.
    study: str | None = None
    material_type: str | None = None
    state: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InventoryFilter:
        """From a query string or CLI options: blanks count as not given."""
        chosen = {}
        for name in (attribute.name for attribute in fields(cls)):
            value = values.get(name)
            text = str(value).strip() if value is not None else ""
            chosen[name] = text or None
        return cls(**chosen)

    def given(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value}


def parse_material_type(text: str) -> MaterialType:
    wanted = text.strip().lower().replace(" ", "_").replace("-", "_")
    for material in MaterialType:
        if wanted in (material.value, material.label.lower().replace(" ", "_").replace("-", "_")):
            return material
    raise ValidationError(
        f"Unknown material type '{text}'; one of {', '.join(m.value for m in MaterialType)}.",
        field="material_type",
    )


def parse_state(text: str) -> State:
    wanted = text.strip().lower().replace(" ", "_").replace("-", "_")
    for state in EXPORTED_STATES:
        if wanted == state.value:
            return state
    raise ValidationError(
        f"'{text}' is not a state of stored material; one of "
        f"{', '.join(state.label for state in EXPORTED_STATES)}.",
        field="state",
    )


@dataclass(frozen=True)
class InventoryExport:
    """A checked export: what to select, which columns, for whom. Made by prepare_export."""

    #: The account's id, not the account: a streamed download outlives the request's session
    #: and records its audit row through a session of its own. None: the command line.
    actor_id: int | None
    filters: InventoryFilter
    researcher_view: bool
    columns: tuple[str, ...]
    #: The site code in the file name, or "all".
    site_label: str
    statement: Select
    zone: ZoneInfo
    chunk_rows: int = CHUNK_ROWS

    def filename(self, extension: str) -> str:
        day = utcnow().astimezone(self.zone).date().isoformat()
        return f"inventory-{self.site_label}-{day}.{extension}"


# -- checking the filter ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    site: Site | None
    unit: StorageUnit | None
    rack: Rack | None
    box: Box | None


def _scope(session: Session, actor: User | None, filters: InventoryFilter) -> _Scope:
    """Resolve the codes (refusing unknown ones and ones that do not fit together) and the
    site the export covers: the one named, else the site of the unit, rack or box named,
    else the network for researchers and the command line and their own site for staff."""
    unit = unit_by_code(session, filters.unit) if filters.unit else None
    rack = rack_by_code(session, filters.rack) if filters.rack else None
    box = box_by_code(session, filters.box) if filters.box else None
    if rack is not None and unit is not None and rack.unit_id != unit.id:
        raise ValidationError(f"Rack {rack.code} is not in {unit.code}.", field="rack")
    if box is not None and rack is not None and box.rack_id != rack.id:
        raise ValidationError(f"Box {box.code} is not in rack {rack.code}.", field="box")
    if box is not None and unit is not None and box.unit_id != unit.id:
        raise ValidationError(f"Box {box.code} is not in {unit.code}.", field="box")
    place = box.unit if box else rack.unit if rack else unit
    site_code = (filters.site or "").strip().upper()
    site: Site | None
    if site_code == ALL_SITES:
        site = None
    elif site_code:
        site = site_by_code(session, site_code)
    elif place is not None:
        site = place.site
    elif actor is None or actor.role is Role.RESEARCHER:
        site = None
    else:
        site = actor.site
    if place is not None and site is not None and place.site_id != site.id:
        raise ValidationError(
            f"{place.code} is at {place.site.code}, not {site.code}.", field="unit"
        )
    if actor is not None and actor.role is Role.TECHNICIAN:
        if site is None:
            raise Forbidden("Technicians export the inventory of their own site only.")
        require_site_access(actor, site.id, site.code)
    return _Scope(site, unit, rack, box)


def prepare_export(
    session: Session,
    *,
    actor: User | None,
    filters: InventoryFilter,
    researcher_view: bool = False,
) -> InventoryExport:
    """Check who asks for what and build the query; raises a DomainError before anything is
    written, so a refused export never starts a half file or a broken download.

    A researcher always gets the researcher view; staff and the command line may ask for it
    (``researcher_view``), e.g. to see what a researcher would receive."""
    require_role(actor, *Role)
    researcher = researcher_view or (actor is not None and actor.role is Role.RESEARCHER)
    scope = _scope(session, actor, filters)
    material = parse_material_type(filters.material_type) if filters.material_type else None
    state = parse_state(filters.state) if filters.state else None
    if researcher and state not in (None, State.STORED):
        raise ValidationError(
            "A researcher's inventory lists stored material only.", field="state"
        )
    study = (filters.study or "").strip() or None
    known = select(Episode.id).where(Episode.protocol == study).limit(1)
    if study and session.scalar(known) is None:
        raise NotFound(f"No study '{study}'.", field="study")

    statement = _statement(researcher)
    if scope.site is not None:
        statement = statement.where(StorageUnit.site_id == scope.site.id)
    if scope.unit is not None:
        statement = statement.where(Box.unit_id == scope.unit.id)
    if scope.rack is not None:
        statement = statement.where(Box.rack_id == scope.rack.id)
    if scope.box is not None:
        statement = statement.where(Item.box_id == scope.box.id)
    if study:
        statement = statement.where(Episode.protocol == study)
    if material is not None:
        statement = statement.where(Item.material_type == material)
    if state is not None:
        statement = statement.where(Item.state == state)
    return InventoryExport(
        actor_id=actor.id if actor is not None else None,
        filters=filters,
        researcher_view=researcher,
        columns=RESEARCHER_COLUMNS if researcher else STAFF_COLUMNS,
        site_label=scope.site.code if scope.site else "all",
        statement=statement,
        zone=site_zone(),
    )


def _statement(researcher: bool) -> Select:
    """One SELECT with joins: item, box, unit, site, rack (a box may stand in none), episode
    and patient (for the pseudonym, and the consent a researcher's export depends on).
    The researcher's statement does not even select the CoI or the dates.

    Enumerations come as their stored text and times as the driver gives them (aware on
    PostgreSQL, naive UTC on SQLite): the per-value conversions of the column types would
    cost more than the query on a million rows; the table shaping maps them in bulk."""
    selected = [
        Site.code.label("site"),
        StorageUnit.code.label("unit"),
        Rack.code.label("rack"),
        Box.code.label("box"),
        Box.box_type.label("box_type"),
        Item.position.label("position_index"),
        Item.code.label("code"),
        Item.check_character.label("check"),
        type_coerce(Item.kind, String).label("kind"),
        type_coerce(Item.material_type, String).label("material_type"),
        Episode.protocol.label("study"),
        Episode.product_name.label("product"),
        Patient.pseudonym.label("pseudonym"),
        Item.timepoint.label("timepoint"),
        Item.timepoint_day.label("timepoint_day"),
        cast(Item.quantity, Float).label("quantity"),
        Item.unit.label("quantity_unit"),
        type_coerce(Item.state, String).label("state"),
        Item.thaw_count.label("thaw_count"),
    ]
    if not researcher:
        selected += [
            Episode.coi.label("coi"),
            type_coerce(Item.stored_at, DateTime(timezone=True)).label("stored_at"),
            type_coerce(Item.collected_at, DateTime(timezone=True)).label("collected_at"),
        ]
    statement = (
        select(*selected)
        .select_from(Item)
        .join(Box, Item.box_id == Box.id)
        .join(StorageUnit, Box.unit_id == StorageUnit.id)
        .join(Site, StorageUnit.site_id == Site.id)
        .outerjoin(Rack, Box.rack_id == Rack.id)
        .join(Episode, Item.episode_id == Episode.id)
        .join(Patient, Episode.patient_id == Patient.id)
        .where(Item.box_id.is_not(None))
        .order_by(*box_order(), Item.position, Item.code)
    )
    if researcher:
        statement = statement.where(
            Item.kind == Kind.ALIQUOT,
            Item.state == State.STORED,
            Patient.consent_biobank.is_(True),
            Patient.consent_withdrawn_at.is_(None),
            # Held material (QC, excursion, ...) is not available to research until cleared.
            ~exists().where(Hold.item_id == Item.id, Hold.cleared_at.is_(None)),
        )
    return statement


# -- the exports --------------------------------------------------------------------------------


def csv_chunks(
    session: Session,
    actor: User | None,
    filters: InventoryFilter,
    *,
    researcher_view: bool = False,
) -> Iterator[str]:
    """The CSV text chunk by chunk, header first, for a streamed response. The filter is
    checked now (a refusal raises here); the rows are read as the chunks are taken."""
    export = prepare_export(
        session, actor=actor, filters=filters, researcher_view=researcher_view
    )
    return tables.csv_text(session, export)


def write_csv(
    session: Session,
    actor: User | None,
    filters: InventoryFilter,
    stream: IO[str],
    *,
    researcher_view: bool = False,
    progress: ProgressCallback | None = None,
) -> int:
    """Write the CSV to an open text stream; returns the number of rows."""
    export = prepare_export(
        session, actor=actor, filters=filters, researcher_view=researcher_view
    )
    return write_export_csv(session, export, stream, progress)


def write_export_csv(
    session: Session,
    export: InventoryExport,
    stream: IO[str],
    progress: ProgressCallback | None = None,
) -> int:
    written = [0]

    def count(rows: int) -> None:
        written[0] = rows
        if progress is not None:
            progress(rows)

    for text in tables.csv_text(session, export, progress=count):
        stream.write(text)
    return written[0]


def write_xlsx(
    session: Session,
    actor: User | None,
    filters: InventoryFilter,
    path_or_file: Any,
    progress: ProgressCallback | None = None,
    *,
    researcher_view: bool = False,
) -> int:
    """Write the workbook to a path or a binary file; returns the number of rows.
    ``progress`` is called with the rows written so far after every chunk."""
    export = prepare_export(
        session, actor=actor, filters=filters, researcher_view=researcher_view
    )
    return tables.write_xlsx(session, export, path_or_file, progress)
