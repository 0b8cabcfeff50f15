"""The downloadable import templates, as CSV or XLSX bytes.

The CSV template is the header row only, so that nothing in it is imported by mistake. The
XLSX template has the header on its first sheet (the one an import reads) and a second sheet,
"help", describing each column with an example value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from openpyxl import Workbook
from openpyxl.styles import Font

from lims.errors import NotFound
from lims.imports.tables import Column

FORMATS = {"csv": "text/csv; charset=utf-8", "xlsx": (
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
)}  # fmt: skip


def template(columns: Sequence[Column], format: str, *, sheet: str) -> bytes:
    if format == "csv":
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerow([column.name for column in columns])
        # A byte-order mark: Excel then opens the file as UTF-8 (µL, ø) and not as Latin-1.
        return ("\ufeff" + text.getvalue()).encode("utf-8")
    if format != "xlsx":
        raise NotFound(f"No template in the format '{format}'; there are csv and xlsx.")
    book = Workbook()
    data = book.active
    data.title = sheet
    data.append([column.name for column in columns])
    for cell in data[1]:
        cell.font = Font(bold=True)
        data.column_dimensions[cell.column_letter].width = max(14, len(str(cell.value)) + 4)
    data.freeze_panes = "A2"
    help_sheet = book.create_sheet("help")
    help_sheet.append(["column", "required", "what it holds", "example"])
    for cell in help_sheet[1]:
        cell.font = Font(bold=True)
    for column in columns:
        help_sheet.append(
            [column.name, "yes" if column.required else "no", column.help, column.example]
        )
    help_sheet.append([])
    help_sheet.append(
        ["", "", "Only the first sheet is imported; the header row is its first row. Format "
         "code columns as Text so that leading zeros are kept."]
    )  # fmt: skip
    for letter, width in zip("ABCD", (20, 10, 90, 24), strict=True):
        help_sheet.column_dimensions[letter].width = width
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
