"""Writing an inventory export: query rows in chunks shaped into pandas tables, then CSV text
or an XLSX workbook, and the audit row of the export.

Memory stays bounded: rows come through a server-side cursor on PostgreSQL (``stream_results``
with ``yield_per``) in chunks of ``export.chunk_rows``, each chunk becomes one DataFrame and is
written before the next is read. XLSX uses openpyxl's write-only workbook, which streams rows
to a temporary XML part; pandas' ``ExcelWriter`` (even with ``startrow`` per chunk) keeps the
whole workbook in memory, so it is not used here.

On PostgreSQL the CSV is written by the database itself (``lims.exports.copy_csv``: the same
bytes, several times faster); the pandas path writes it on SQLite, and the XLSX everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd
from flask import current_app
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.custody.domain import Kind, State
from lims.custody.models import MaterialType
from lims.exports import copy_csv
from lims.storage.domain import BOX_TYPES

if TYPE_CHECKING:
    from lims.exports.inventory import InventoryExport

DATE_COLUMNS = frozenset({"stored_at", "collected_at"})
#: Local time, minutes: the same in the CSV text and in the XLSX cells' format.
DATE_FORMAT = "%Y-%m-%d %H:%M"
XLSX_DATE_FORMAT = "yyyy-mm-dd hh:mm"
#: Rows per worksheet: Excel's limit less the header; a longer export continues on a new sheet.
XLSX_SHEET_ROWS = 1_048_575
#: Position names by box type, computed once: a row's name is a lookup, not a calculation.
_POSITION_NAMES = {box_type: geometry.names() for box_type, geometry in BOX_TYPES.items()}

#: Stored values to the words the export shows.
_KIND_LABELS = {kind.value: kind.label for kind in Kind}
_MATERIAL_LABELS = {material.value: material.label for material in MaterialType}
_STATE_LABELS = {state.value: state.label for state in State}

ProgressCallback = Callable[[int], None]


def _local(values: list[datetime | None], zone: ZoneInfo) -> pd.Series:
    """UTC times (aware, or naive meaning UTC) as naive local times, as a spreadsheet shows
    them; vectorised."""
    moments = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    return moments.dt.tz_convert(zone).dt.tz_localize(None)


def frame_of(rows: list[Any], export: InventoryExport) -> pd.DataFrame:
    """One chunk of rows shaped into the export's columns."""
    keys = export.statement.selected_columns.keys()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
    data = {key: list(values) for key, values in zip(keys, columns, strict=True)}
    positions = [
        _POSITION_NAMES[box_type][index - 1] if box_type in _POSITION_NAMES and index else None
        for box_type, index in zip(data["box_type"], data["position_index"], strict=True)
    ]
    locations = [
        " / ".join(part for part in parts if part)
        for parts in zip(data["unit"], data["rack"], data["box"], positions, strict=True)
    ]
    shaped: dict[str, Any] = {
        "site": data["site"],
        "unit": data["unit"],
        "rack": data["rack"],
        "box": data["box"],
        "position": positions,
        "location": locations,
        "code": data["code"],
        "check": data["check"],
        "kind": [_KIND_LABELS[kind] for kind in data["kind"]],
        "material_type": [_MATERIAL_LABELS[material] for material in data["material_type"]],
        "study": data["study"],
        "product": data["product"],
        "pseudonym": data["pseudonym"],
        "timepoint": data["timepoint"],
        "timepoint_day": pd.array(data["timepoint_day"], dtype="Int64"),
        "quantity": pd.array(data["quantity"], dtype="float64"),
        "quantity_unit": data["quantity_unit"],
        "state": [_STATE_LABELS[state] for state in data["state"]],
        "thaw_count": pd.array(data["thaw_count"], dtype="Int64"),
    }
    if not export.researcher_view:
        shaped["coi"] = data["coi"]
        shaped["stored_at"] = _local(data["stored_at"], export.zone)
        shaped["collected_at"] = _local(data["collected_at"], export.zone)
    return pd.DataFrame({column: shaped[column] for column in export.columns})


def frames(session: Session, export: InventoryExport) -> Iterator[pd.DataFrame]:
    """The export in chunks; an empty export is one empty frame (so the header is written)."""
    # Core rows through the session's connection (same transaction): the ORM's result layer
    # would double the cost per row and there is no entity to load.
    result = session.connection().execute(
        export.statement.execution_options(stream_results=True, yield_per=export.chunk_rows)
    )
    try:
        empty = True
        for rows in result.partitions():
            empty = False
            yield frame_of(rows, export)
        if empty:
            yield frame_of([], export)
    finally:
        result.close()  # a server-side cursor must not outlive an abandoned download


# -- writing ----------------------------------------------------------------------------------


def _record_export(
    session: Session, export: InventoryExport, fmt: str, rows: int, complete: bool
) -> None:
    """One audit row per export: who, which filter and view, how many rows, finished or not."""
    detail = {
        "format": fmt,
        "view": "researcher" if export.researcher_view else "staff",
        "filters": export.filters.given(),
        "rows": rows,
        "complete": complete,
    }
    audit.record_action(
        session,
        actor=session.get(User, export.actor_id) if export.actor_id is not None else None,
        entity="inventory_export",
        entity_id=export.site_label,
        action="export",
        detail=json.dumps(detail, sort_keys=True, ensure_ascii=False),
    )
    session.commit()


def _record_unfinished(session: Session, export: InventoryExport, fmt: str, rows: int) -> None:
    """An export broken off (a closed download, an error) is recorded too: part was sent."""
    try:
        session.rollback()
        _record_export(session, export, fmt, rows, complete=False)
    except Exception:  # the original error is the one to report
        session.rollback()
        current_app.logger.exception("could not record an unfinished inventory export")


def csv_text(
    session: Session,
    export: InventoryExport,
    progress: ProgressCallback | None = None,
    *,
    use_copy: bool | None = None,
) -> Iterator[str]:
    """The CSV text, header first, one piece per chunk; the audit row when it ends (or is
    broken off). ``progress`` gets the rows written so far after every chunk.

    On PostgreSQL the database writes the CSV (``lims.exports.copy_csv``, the same bytes);
    ``use_copy=False`` asks for the pandas path there too (the tests compare the two)."""
    if use_copy is None:
        use_copy = copy_csv.available(session)
    rows = 0
    try:
        pieces = copy_csv.csv_chunks(session, export) if use_copy else _csv_pieces(session, export)
        with closing(pieces) as chunks:
            for text, rows in chunks:  # rows: so far, for the audit row
                yield text
                if progress is not None:
                    progress(rows)
    except BaseException:  # GeneratorExit included: the download was closed half way
        _record_unfinished(session, export, "csv", rows)
        raise
    _record_export(session, export, "csv", rows, complete=True)


def _csv_pieces(session: Session, export: InventoryExport) -> Iterator[tuple[str, int]]:
    """The pandas path: each chunk's CSV text and the rows written so far."""
    rows = 0
    with closing(frames(session, export)) as chunks:
        for number, frame in enumerate(chunks):
            rows += len(frame)
            text = frame.to_csv(
                index=False, header=number == 0, date_format=DATE_FORMAT, lineterminator="\n"
            )
            yield text, rows


def _cells(frame: pd.DataFrame, column: str, sheet: Any) -> list[Any]:
    """A column as plain Python values for openpyxl: None for missing, dates formatted."""
    series = frame[column]
    if column in DATE_COLUMNS:
        cells = []
        for moment in series:
            if pd.isna(moment):
                cells.append(None)
                continue
            cell = WriteOnlyCell(sheet, value=moment.to_pydatetime())
            cell.number_format = XLSX_DATE_FORMAT
            cells.append(cell)
        return cells
    return series.astype(object).where(series.notna(), None).tolist()


def write_xlsx(
    session: Session, export: InventoryExport, target: Any, progress: ProgressCallback | None
) -> int:
    """Write the workbook to ``target`` (a path or a binary file) chunk by chunk; returns the
    number of rows. Beyond Excel's row limit the rows go on in sheets "Inventory 2", ..."""
    workbook = Workbook(write_only=True)
    sheets: list[Any] = []

    def new_sheet() -> Any:
        sheet = workbook.create_sheet("Inventory" if not sheets else f"Inventory {len(sheets) + 1}")
        header = []
        for name in export.columns:
            cell = WriteOnlyCell(sheet, value=name)
            cell.font = Font(bold=True)
            header.append(cell)
        sheet.append(header)
        sheets.append(sheet)
        return sheet

    rows = in_sheet = 0
    try:
        sheet = new_sheet()
        with closing(frames(session, export)) as chunks:
            for frame in chunks:
                # Formatted cells belong to the workbook's styles, so a chunk that spills onto
                # a new sheet may carry cells made with the previous one.
                columns = [_cells(frame, column, sheet) for column in export.columns]
                for record in zip(*columns, strict=True):
                    if in_sheet == XLSX_SHEET_ROWS:
                        sheet, in_sheet = new_sheet(), 0
                    sheet.append(record)
                    in_sheet += 1
                rows += len(frame)
                if progress is not None:
                    progress(rows)
        workbook.save(target)
    except BaseException:
        _record_unfinished(session, export, "xlsx", rows)
        raise
    _record_export(session, export, "xlsx", rows, complete=True)
    return rows
