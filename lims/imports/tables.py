"""Reading an uploaded table (CSV or XLSX) into rows of text, for the imports.

Pure: no Flask, no database. Whatever the lab's spreadsheet program wrote is accepted where it
can be read without guessing: CSV in UTF-8 (with or without a byte-order mark) or, failing
that, Windows-1252 (what Excel "CSV" writes on a Danish Windows), separated by commas,
semicolons (Danish Excel) or tabs; or an XLSX workbook, of which the first sheet is read.

Every cell is kept as the text typed (``dtype=str``, no "NA" → missing), so a box code ``0012``
or a timepoint ``NA`` stays what it was. Header names are compared case-insensitively with
spaces, underscores and hyphens alike (``Box code`` = ``box_code`` = ``BOX-CODE``).

Row numbers are those a person sees: the header is row 1 of the sheet (line 1 of a CSV file),
the first data row is row 2. Anything that is not a readable table is refused with one clear
message (:class:`TableError`), never an exception from deep inside a parser.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lims.errors import ValidationError

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 20_000
#: An XLSX is a zip: what it may unpack to, in all and relative to its size. A real workbook
#: of 20,000 rows stays far below both; a zip bomb does not.
MAX_UNPACKED_BYTES = 100 * 1024 * 1024
MAX_PACKING_RATIO = 200
SEPARATORS = (";", ",", "\t")
#: Columns a header may have: the widest template has fewer than 30. A wider file is refused
#: before it is parsed, whatever it holds (100,000 columns once took minutes to refuse).
MAX_COLUMNS = 200
#: Unknown columns named in a refusal; the rest are counted.
MAX_NAMED_COLUMNS = 10

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACING = re.compile(r"[\s_\-]+")
_XLSX_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # Excel 97-2003 (.xls) and password-protected workbooks


class TableError(ValidationError):
    """The file as a whole cannot be read: nothing was imported."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="file")


@dataclass(frozen=True)
class Row:
    #: The row of the sheet (line of the CSV file) it came from; the header is row 1.
    number: int
    #: Normalised column name → the cell's text, stripped ("" when empty).
    values: dict[str, str]

    def get(self, column: str) -> str:
        return self.values.get(column, "")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import, for the per-row report."""

    row: int | None
    column: str | None
    message: str


@dataclass(frozen=True)
class Column:
    """A column of an import file, as the template and its help sheet describe it."""

    name: str
    required: bool
    help: str
    example: str = ""


def column_key(name: str) -> str:
    """A header as it is compared: lower case, runs of spaces/underscores/hyphens as ``_``."""
    return _SPACING.sub("_", str(name).replace("\ufeff", "").strip().lower()).strip("_")


def read_table(
    data: bytes,
    *,
    filename: str,
    columns: Sequence[Column],
    max_bytes: int = MAX_BYTES,
    max_rows: int = MAX_ROWS,
) -> list[Row]:
    """The data rows of an uploaded CSV or XLSX file, or a :class:`TableError`.

    ``columns`` are the ones the import knows; the required ones must be in the header and no
    other column may be (a misspelt header would otherwise be silently ignored).
    """
    if not data:
        raise TableError("The file is empty. Nothing was imported.")
    if len(data) > max_bytes:
        raise TableError(
            f"The file is {len(data) / 1_048_576:.1f} MB; an import file may be at most "
            f"{max_bytes / 1_048_576:.0f} MB. Split it into smaller files. Nothing was imported."
        )
    grid = _read_xlsx(data) if data.startswith(_XLSX_MAGIC) else _read_csv(data, filename)
    return _rows(grid, columns, max_rows)


def _not_a_table(filename: str, what: str = "") -> TableError:
    name = f"'{filename}' " if filename else "The file "
    return TableError(
        f"{name}is not a CSV or XLSX file{what}. Save the sheet from your spreadsheet program "
        "as CSV or as an Excel workbook (.xlsx). Nothing was imported."
    )


def _read_xlsx(data: bytes) -> list[list[str]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = {member.filename for member in members}
            unpacked = sum(member.file_size for member in members)
    except (zipfile.BadZipFile, ValueError, OSError):
        raise TableError(
            "The Excel file is damaged (it cannot be opened as a workbook). Save it again as "
            ".xlsx or as CSV. Nothing was imported."
        ) from None
    if "xl/workbook.xml" not in names:
        raise _not_a_table("", " (it is a zip archive, but not an Excel workbook)")
    if unpacked > MAX_UNPACKED_BYTES or unpacked > MAX_PACKING_RATIO * len(data):
        raise TableError(
            "The Excel file unpacks to far more than a sheet of this size holds; it is refused "
            "as unsafe. Save the sheet as CSV and import that. Nothing was imported."
        )
    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it does not know in files made by
            # other programs; the values are read all the same.
            warnings.simplefilter("ignore")
            frame = pd.read_excel(
                io.BytesIO(data),
                sheet_name=0,
                header=None,
                dtype=str,
                keep_default_na=False,
                engine="openpyxl",
            )
    except Exception:  # any failure inside a damaged workbook is the same refusal for the user
        raise TableError(
            "The Excel file is damaged or not a plain workbook; it could not be read. Save it "
            "again as .xlsx or as CSV. Nothing was imported."
        ) from None
    return _grid(frame)


def _decode(data: bytes, filename: str) -> str:
    if data.startswith(b"%PDF"):
        raise _not_a_table(filename, " (it is a PDF)")
    if data.startswith(_OLE_MAGIC):
        raise TableError(
            "This is an old-style Excel file (.xls) or a password-protected workbook: save it "
            "as .xlsx (without a password) or as CSV. Nothing was imported."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise _not_a_table(filename) from None
    if _CONTROL.search(text):
        raise _not_a_table(filename)
    return text


def _separator(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {separator: header.count(separator) for separator in SEPARATORS}
    best = max(SEPARATORS, key=lambda separator: counts[separator])
    return best if counts[best] else ","


def _read_csv(data: bytes, filename: str) -> list[list[str]]:
    text = _decode(data, filename)
    if not text.strip():
        raise TableError("The file is empty. Nothing was imported.")
    separator = _separator(text)
    header = next((line for line in text.splitlines() if line.strip()), "")
    _check_width(len(next(csv.reader([header], delimiter=separator), [])))
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=separator,
            header=None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        detail = (
            f"line {found.group(2)} has {found.group(3)} cells but the header has "
            f"{found.group(1)} columns"
            if found
            else "the rows are not separated into cells consistently"
        )
        raise TableError(
            f"The CSV file cannot be read: {detail}. Nothing was imported."
        ) from None
    except (pd.errors.EmptyDataError, ValueError):
        raise _not_a_table(filename) from None
    return _grid(frame)


def _grid(frame: pd.DataFrame) -> list[list[str]]:
    return [
        ["" if not isinstance(cell, str) else cell.strip() for cell in row]
        for row in frame.itertuples(index=False, name=None)
    ]


def _rows(grid: list[list[str]], columns: Sequence[Column], max_rows: int) -> list[Row]:
    first = next((n for n, cells in enumerate(grid) if any(cells)), None)
    if first is None:
        raise TableError("The file holds no rows. Nothing was imported.")
    _check_width(len(grid[first]))
    header = [column_key(name) for name in grid[first]]
    body = [(n + 1, cells) for n, cells in enumerate(grid) if n > first and any(cells)]
    _check_header(header, body, columns)
    if len(body) > max_rows:
        elsewhere = (
            f" or import it on the command line (lims import, up to {MAX_ROWS} rows)"
            if max_rows < MAX_ROWS
            else ""
        )
        raise TableError(
            f"The file has {len(body)} rows; an import here takes at most {max_rows}. Split it "
            f"into smaller files{elsewhere}. Nothing was imported."
        )
    if not body:
        raise TableError("The file has a header but no rows below it. Nothing was imported.")
    return [
        Row(number, {name: cell for name, cell in zip(header, cells, strict=False) if name})
        for number, cells in body
    ]


def _check_width(cells: int) -> None:
    if cells > MAX_COLUMNS:
        raise TableError(
            f"The header row has {cells:,} columns; an import takes at most {MAX_COLUMNS}. "
            "Download the template for the column names. Nothing was imported."
        )


def _named(names: list[str]) -> str:
    """Names for a message: the first few, then how many more."""
    shown = ", ".join(names[:MAX_NAMED_COLUMNS])
    more = len(names) - MAX_NAMED_COLUMNS
    return f"{shown} and {more} more" if more > 0 else shown


def _check_header(
    header: list[str], body: list[tuple[int, list[str]]], columns: Sequence[Column]
) -> None:
    known = [column.name for column in columns]
    problems = []
    unnamed = [
        str(n + 1)
        for n, name in enumerate(header)
        if not name and any(n < len(cells) and cells[n] for _, cells in body)
    ]
    if unnamed:
        problems.append(f"column {_named(unnamed)} has values but no header")
    counted = Counter(name for name in header if name)
    doubled = sorted(name for name, times in counted.items() if times > 1)
    if doubled:
        problems.append(f"the column {_named(doubled)} appears twice")
    missing = [column.name for column in columns if column.required and column.name not in counted]
    if missing:
        problems.append(f"missing column {', '.join(missing)}")
    unknown = [name for name in header if name and name not in known]
    if unknown:
        problems.append(
            f"unknown column {_named(unknown)} (the columns are: {', '.join(known)})"
        )
    if problems:
        raise TableError(
            "The header row does not fit this import: " + "; ".join(problems) + ". "
            "Download the template for the column names. Nothing was imported."
        )
