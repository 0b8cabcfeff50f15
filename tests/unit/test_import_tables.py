"""Reading import files: CSV dialects, XLSX, headers, and files that are not tables at all."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from openpyxl import Workbook, load_workbook

from lims.imports import inventory, layout, workbook
from lims.imports.tables import Column, TableError, column_key, read_table
from lims.imports.values import CellError, decimal_number, local_datetime, whole_number

COLUMNS = (
    Column("box_code", True, "box"),
    Column("position", True, "position"),
    Column("quantity", False, "quantity"),
    Column("timepoint", False, "timepoint"),
)


def read(data: bytes, **limits):
    return read_table(data, filename="upload.csv", columns=COLUMNS, **limits)


def xlsx(rows: list[list]) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_comma_separated_utf8_keeps_codes_as_typed():
    rows = read(b"box_code,position,quantity,timepoint\n0012,A1,1.5,NA\n")
    assert len(rows) == 1
    assert rows[0].number == 2
    assert rows[0].values == {
        "box_code": "0012",
        "position": "A1",
        "quantity": "1.5",
        "timepoint": "NA",
    }


def test_semicolons_bom_and_a_decimal_comma_as_danish_excel_writes_them():
    data = "\ufeffBox Code;POSITION;Quantity\r\nBOX-1;A01;1,5\r\n\r\nBOX-1;b2;2\r\n".encode()
    rows = read(data)
    assert [row.number for row in rows] == [2, 4]  # the blank line 3 is skipped, not renumbered
    assert rows[0].get("box_code") == "BOX-1" and rows[0].get("quantity") == "1,5"
    assert decimal_number(rows[0].get("quantity")) == Decimal("1.5")
    assert rows[1].get("position") == "b2" and rows[1].get("timepoint") == ""


def test_windows_1252_csv_is_read_too():
    rows = read("box_code;position;timepoint\nBØX;A1;µ\n".encode("cp1252"))
    assert rows[0].get("box_code") == "BØX" and rows[0].get("timepoint") == "µ"


def test_headers_match_whatever_the_spacing_and_case():
    assert column_key(" Box-Code ") == column_key("box code") == column_key("BOX__CODE")
    assert column_key("box code") == "box_code"


def test_xlsx_first_sheet_with_numbers_and_text_cells():
    data = xlsx([["box_code", "Position", "quantity"], ["0012", "A1", 1.5], [None, None, None],
                 ["BOX-2", 3, 2]])  # fmt: skip
    rows = read_table(data, filename="upload.xlsx", columns=COLUMNS)
    assert [row.number for row in rows] == [2, 4]
    assert rows[0].values == {"box_code": "0012", "position": "A1", "quantity": "1.5"}
    assert rows[1].get("position") == "3" and rows[1].get("quantity") == "2"


def test_missing_and_unknown_columns_are_named_in_one_error():
    with pytest.raises(TableError) as refused:
        read(b"box_code,positon,colour\nB,A1,red\n")
    message = refused.value.message
    assert "missing column position" in message
    assert "unknown column positon, colour" in message
    assert "Nothing was imported" in message and refused.value.field == "file"


def test_a_column_twice_or_values_without_header_are_refused():
    with pytest.raises(TableError, match="box_code appears twice"):
        read(b"box_code,position,Box Code\nB,A1,C\n")
    with pytest.raises(TableError, match="column 3 has values but no header"):
        read(b"box_code,position,\nB,A1,C\n")
    # An empty trailing column, as spreadsheets often write, is harmless.
    assert read(b"box_code,position,\nB,A1,\n")[0].values == {"box_code": "B", "position": "A1"}


def test_many_unknown_columns_are_named_up_to_ten_then_counted():
    extra = ",".join(f"extra{n}" for n in range(25))
    with pytest.raises(TableError) as refused:
        read(f"box_code,position,{extra}\nB,A1{',x' * 25}\n".encode())
    message = refused.value.message
    assert "unknown column extra0, extra1," in message
    assert "extra9 and 15 more (the columns are:" in message and "extra10" not in message


@pytest.mark.parametrize("wide", ["csv", "xlsx"])
def test_a_header_wider_than_any_template_is_refused_before_it_is_read(wide):
    header = ["box_code", "position", *(f"c{n}" for n in range(199))]  # 201 columns
    if wide == "csv":
        data, name = (",".join(header) + "\n" + "x," * 200 + "x\n").encode(), "wide.csv"
    else:
        data, name = xlsx([header, ["x"] * 201]), "wide.xlsx"
    with pytest.raises(TableError) as refused:
        read_table(data, filename=name, columns=COLUMNS)
    assert "The header row has 201 columns; an import takes at most 200" in refused.value.message
    assert "Nothing was imported" in refused.value.message
    # 200 is still read, and then judged by its names.
    with pytest.raises(TableError, match="unknown column c0, "):
        read(",".join(header[:200]).encode() + b"\n" + b"x," * 199 + b"x\n")


def test_a_row_longer_than_the_header_names_its_line():
    with pytest.raises(TableError, match="line 3 has 3 cells but the header has 2 columns"):
        read(b"box_code,position\nB,A1\nB,A2,extra\n")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "it is a PDF"),
        (bytes(range(256)) * 4, "is not a CSV or XLSX file"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old-style Excel file"),
        (b"PK\x03\x04" + b"\x00" * 200, "damaged"),
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"box_code,position\n", "no rows below it"),
    ],
)
def test_files_that_are_not_tables_get_a_clear_error(data, expected):
    with pytest.raises(TableError, match=expected):
        read(data)


def test_a_zip_that_is_not_a_workbook_and_a_zip_bomb_are_refused():
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(TableError, match="not an Excel workbook"):
        read(plain.getvalue())
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\x00" * (20 * 1024 * 1024))
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(TableError, match="unsafe"):
        read(bomb.getvalue())


def test_a_corrupt_workbook_is_refused_not_a_crash():
    good = xlsx([["box_code", "position"], ["B", "A1"]])
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(broken, "w") as target:
        for member in source.infolist():
            content = source.read(member)
            if member.filename.startswith("xl/worksheets/"):
                content = content[: len(content) // 2]  # cut in the middle of the XML
            target.writestr(member, content)
    with pytest.raises(TableError, match="damaged or not a plain workbook"):
        read(broken.getvalue())


def test_too_large_or_too_many_rows():
    with pytest.raises(TableError, match="at most 1 MB"):
        read(b"box_code,position\n" + b"B,A1\n" * 300_000, max_bytes=1024 * 1024)
    with pytest.raises(TableError, match="has 3 rows; an import here takes at most 2"):
        read(b"box_code,position\nB,A1\nB,A2\nB,A3\n", max_rows=2)


def test_numbers_with_decimal_commas_and_whole_numbers():
    assert decimal_number("1,5") == decimal_number("1.5") == Decimal("1.5")
    assert decimal_number("1 000,25") == Decimal("1000.25")
    assert decimal_number("5E+06") == Decimal("5000000")
    for bad in ("1.000,5", "1,2,3", "abc", "", "1.5 mL", "NaN", "inf"):
        with pytest.raises(CellError):
            decimal_number(bad)
    assert whole_number("12", low=0, high=99) == whole_number("12,0", low=0, high=99) == 12
    with pytest.raises(CellError, match="not a whole number"):
        whole_number("1,5", low=0, high=99)
    with pytest.raises(CellError, match="outside 0–99"):
        whole_number("100", low=0, high=99)


def test_dates_iso_or_danish_in_local_time():
    zone, now = ZoneInfo("Europe/Copenhagen"), datetime(2025, 1, 1, tzinfo=UTC)
    summer = datetime(2024, 7, 5, 12, 30, tzinfo=UTC)  # 14:30 in Copenhagen (CEST)
    for text in ("2024-07-05 14:30", "2024-07-05T14:30:00", "05-07-2024 14:30", "5.7.2024 14.30"):
        assert local_datetime(text, zone=zone, now=now) == summer, text
    assert local_datetime("05/03/2024", zone=zone, now=now) == datetime(
        2024, 3, 4, 23, 0, tzinfo=UTC
    )
    bad_dates = (("2024-02-30", "exists"), ("03/05/24", "not a date"), ("2026-01-01", "future"))
    for bad, why in bad_dates:
        with pytest.raises(CellError, match=why):
            local_datetime(bad, zone=zone, now=now)


@pytest.mark.parametrize("columns", [layout.COLUMNS, inventory.COLUMNS])
def test_templates_have_the_import_columns_and_read_back_as_an_empty_import(columns):
    names = [column.name for column in columns]
    csv_bytes = workbook.template(columns, "csv", sheet="x")
    assert csv_bytes.decode("utf-8-sig").strip() == ",".join(names)
    book = load_workbook(io.BytesIO(workbook.template(columns, "xlsx", sheet="data")))
    assert book.sheetnames == ["data", "help"]
    assert [cell.value for cell in book["data"][1]] == names
    help_rows = list(book["help"].iter_rows(min_row=2, values_only=True))
    assert [row[0] for row in help_rows[: len(names)]] == names
    required = {row[0] for row in help_rows[: len(names)] if row[1] == "yes"}
    assert required == {column.name for column in columns if column.required}
    # The template as downloaded is a valid file for its import, with no rows to import.
    with pytest.raises(TableError, match="no rows below it"):
        read_table(csv_bytes, filename="t.csv", columns=columns)
