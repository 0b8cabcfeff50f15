"""The rack-scanner file parser: each maker's layout, positions, headers, rack lines, NO READ,
and every malformed file refused with its line numbers."""

from __future__ import annotations

import codecs

import pytest

from lims.errors import ValidationError
from lims.storage.rackscan import (
    MAX_BYTES,
    MAX_LINES,
    RackScanError,
    Reading,
    parse_rack_scan,
)


def parse(text: str | bytes, **options):
    return parse_rack_scan(text.encode() if isinstance(text, str) else text, **options)


def table(scan) -> list[tuple[str, str | None, bool]]:
    return [(r.position_name, r.code, r.unreadable) for r in scan.readings]


def refusal(text: str | bytes, **options) -> RackScanError:
    with pytest.raises(RackScanError) as caught:
        parse(text, **options)
    return caught.value


# -- the makers' layouts (short samples of each) --------------------------------------------

# Thermo VisionMate: a CSV export with a header; "No Tube" and "No Read" in the code column;
# the rack's barcode in a column of every row.
VISIONMATE = (
    "TUBE,BARCODE,STATUS,RACKID,DATE,TIME\r\n"
    "A01,0188137823,Code OK,BOX-12,03/01/2025,10:14:02\r\n"
    "A02,No Read,No Read,BOX-12,03/01/2025,10:14:02\r\n"
    "A03,No Tube,No Tube,BOX-12,03/01/2025,10:14:02\r\n"
    "B01,0188137800,Code OK,BOX-12,03/01/2025,10:14:02\r\n"
)
# Ziath DataPaq: tab-separated, a rack identifier line and a header, A1 positions.
DATAPAQ = (
    "Rack ID:\tBOX-12\n"
    "Scan date:\t2025-03-01 10:14\n"
    "Position\tTube Barcode\n"
    "A1\t1234567890\n"
    "A2\tNOREAD\n"
    "A3\t\n"
    "B1\t1234567891\n"
)
# Micronic: semicolon-separated rack, position and tube ID with a header.
MICRONIC = (
    "Rack;Position;TubeCode\n"
    "BOX-12;A01;MI00001234\n"
    "BOX-12;A02;NO READ\n"
    "BOX-12;A03;\n"
    "BOX-12;B01;MI00001235\n"
)
# FluidX Perception: no header, rack barcode, position and tube barcode on every row.
FLUIDX = (
    "BOX-12,A1,FX05653780\n"
    "BOX-12,A2,NO READ\n"
    "BOX-12,A3,NO TUBE\n"
    "BOX-12,B1,FX05653781\n"
)


@pytest.mark.parametrize("text", [VISIONMATE, DATAPAQ, MICRONIC, FLUIDX])
def test_each_makers_export_reads_the_same_rack(text):
    scan = parse(text)
    assert scan.rack_id == "BOX-12"
    positions = [(r.position_name, r.code is not None, r.unreadable) for r in scan.readings]
    assert positions == [
        ("A1", True, False),
        ("A2", False, True),  # a tube stands there, its code was not read
        ("A3", False, False),  # no tube
        ("B1", True, False),
    ]


def test_visionmate_codes_and_line_numbers():
    scan = parse(VISIONMATE)
    assert scan.readings[0] == Reading("A1", "0188137823", 2)
    assert scan.readings[3] == Reading("B1", "0188137800", 5)


def test_plain_position_code_rows_without_header_or_rack():
    scan = parse("A1,TUBE-1\nA2,TUBE-2\nH12,TUBE-3\n")
    assert scan.rack_id is None
    assert table(scan) == [
        ("A1", "TUBE-1", False),
        ("A2", "TUBE-2", False),
        ("H12", "TUBE-3", False),
    ]


@pytest.mark.parametrize("written", ["A1", "A01", "a1", "a01", " A01 ", '"A01"'])
def test_a1_and_a01_positions_are_the_same(written):
    assert parse(f"{written},X1\n").readings[0].position_name == "A1"


@pytest.mark.parametrize(
    "header",
    ["Position,Barcode", "position,code", "Well,Tube ID", "TUBE,BARCODE", "Pos,Sample ID"],
)
def test_headers_are_recognised_by_name(header):
    scan = parse(f"{header}\nA1,X1\nB2,X2\n")
    assert table(scan) == [("A1", "X1", False), ("B2", "X2", False)]


def test_header_columns_in_any_order_and_extra_columns_passed_over():
    scan = parse(
        "Date;Barcode;Rack ID;Position\n2025-03-01;X1;BOX-12;A01\n2025-03-01;;BOX-12;A02\n"
    )
    assert scan.rack_id == "BOX-12"
    assert table(scan) == [("A1", "X1", False), ("A2", None, False)]


def test_a_status_column_tells_no_read_from_no_tube():
    scan = parse("Position,Barcode,Status\nA1,,No Read\nA2,,No Tube\nA3,X3,OK\n")
    assert table(scan) == [("A1", None, True), ("A2", None, False), ("A3", "X3", False)]


@pytest.mark.parametrize(
    "line",
    ["Rack ID: BOX-12", "RackID,BOX-12", "Rack Base Name: box-12", "Rack barcode = BOX-12",
     '"Rack ID","BOX-12"', "Rack ID:,BOX-12,,"],
)  # fmt: skip
def test_a_rack_identifier_line_before_the_rows(line):
    scan = parse(f"{line}\nA1,X1\n")
    assert scan.rack_id == "BOX-12" and table(scan) == [("A1", "X1", False)]


def test_key_value_lines_before_the_rows_are_passed_over():
    # The Matrix TrakMate layout: a time line, the rack line, then "A01;  code" rows.
    text = (
        "Date & time of Trace = 26 06 2017 03:51:22 PM\n"
        "Rack Base Name: BOX-12\n"
        "  A01;  0232021993\n"
        "  A02;  No TrakMate\n"
    )
    scan = parse(text)
    assert scan.rack_id == "BOX-12"
    assert table(scan) == [("A1", "0232021993", False), ("A2", None, False)]


@pytest.mark.parametrize("empty", ["", "NO TUBE", "No Tube", "notube", "EMPTY", "empty", "N/A"])
def test_words_for_no_tube(empty):
    assert table(parse(f"A1,{empty}\nA2,X2\n"))[0] == ("A1", None, False)


@pytest.mark.parametrize("no_read", ["NO READ", "No Read", "NOREAD", "no-read", "Unreadable"])
def test_words_for_no_read(no_read):
    assert table(parse(f"A1,{no_read}\n"))[0] == ("A1", None, True)


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_comma_semicolon_or_tab(separator):
    scan = parse(f"Position{separator}Barcode\nA1{separator}X1\nA2{separator}X2\n")
    assert table(scan) == [("A1", "X1", False), ("A2", "X2", False)]


def test_bom_crlf_trailing_blank_lines_and_encodings():
    text = "Position,Barcode\r\nA1,X1\r\nA2,X2\r\n\r\n\r\n"
    for data in (
        codecs.BOM_UTF8 + text.encode(),
        text.encode("utf-16"),
        text.encode("latin-1"),
    ):
        assert table(parse(data)) == [("A1", "X1", False), ("A2", "X2", False)]


def test_codes_are_normalised_and_a_normaliser_may_refuse():
    assert parse("A1, ab-12 \n").readings[0].code == "AB-12"
    scan = parse("A1,=W123424000001\n", normalise=lambda code: code.lstrip("="))
    assert scan.readings[0].code == "W123424000001"

    def bench(code: str) -> str:
        if code.startswith("&"):
            raise ValidationError("That barcode is a Chain of Identity, not a tube identifier.")
        return code

    problem = refusal("A1,X1\nA2,&)CO123\n", normalise=bench)
    assert problem.problems == [
        "line 2: That barcode is a Chain of Identity, not a tube identifier."
    ]


def test_the_refusal_is_a_validation_error_about_the_file():
    problem = refusal("A1,X\nA1,Y\n")
    assert isinstance(problem, ValidationError) and problem.field == "file"
    assert problem.status_code == 422


# -- malformed files: every problem with its line number ------------------------------------


def test_every_bad_line_is_named_and_nothing_is_read():
    text = (
        "Rack ID: BOX-12\n"  # 1
        "Position,Barcode\n"  # 2
        "A1,X1\n"  # 3
        "A1,X2\n"  # 4 duplicate position
        "B1,X1\n"  # 5 duplicate code
        "Z0,X3\n"  # 6 not a position
        "C1,X\x07Y\n"  # 7 control character
        f"C2,{'Q' * 41}\n"  # 8 too long
        "hello\n"  # 9 not a row
        ",X9\n"  # 10 no position
    )
    problem = refusal(text)
    assert problem.problems == [
        "line 4: position A1 again (first on line 3)",
        "line 5: tube X1 again (first on line 3)",
        "line 6: 'Z0' is not a position (A1 or A01)",
        "line 7: the code holds a control character (not a tube code)",
        "line 8: a code of 41 characters; a tube code has at most 40",
        "line 9: 'hello' is not a position (A1 or A01)",
        "line 10: no position (expected e.g. 'A1,<tube code>')",
    ]
    assert "nothing was stored: 7 problems" in problem.message
    assert "line 4: position A1 again" in problem.message


def test_a_long_code_is_not_echoed():
    problem = refusal(f"A1,{'0101601234' * 5}\n")
    assert "0101601234" not in problem.message


def test_a_group_separator_at_the_end_of_a_code_is_refused_not_dropped():
    assert refusal("A1,ABC\x1d\n").problems == [
        "line 1: the code holds a control character (not a tube code)"
    ]


def test_two_racks_in_one_file_are_refused():
    problem = refusal("BOX-12,A1,X1\nBOX-13,A2,X2\n")
    assert problem.problems == [
        "line 2: rack BOX-13 where line 1 names rack BOX-12: export one rack per file"
    ]
    problem = refusal("Rack ID: BOX-12\nRack,Position,Code\nBOX-13,A1,X1\n")
    assert problem.problems == [
        "line 3: rack BOX-13 where line 1 names rack BOX-12: export one rack per file"
    ]


def test_a_second_rack_line_or_header_is_refused():
    assert refusal("Rack ID: A\nRack ID: B\nA1,X\n").problems == [
        "line 2: a second rack line (the rack is named on line 1)"
    ]
    assert refusal("Position,Barcode\nPosition,Barcode\nA1,X\n").problems == [
        "line 2: a second header row"
    ]
    assert refusal("Rack ID: BOX-1, BOX-2\nA1,X\n").problems == [
        "line 1: a rack line names one rack (e.g. 'Rack ID: BOX-12')"
    ]


def test_a_header_without_a_code_column_is_refused():
    assert refusal("Position,Comment\nA1,X\n").problems == [
        "line 1: the header names the position column but no code column (e.g. 'Barcode')"
    ]


def test_a_line_that_is_neither_header_rack_line_nor_row():
    problem = refusal("12345,67890\nA1,X\n")
    assert problem.problems[0].startswith("line 1: neither a header")


def test_rows_after_the_positions_began_must_be_positions():
    assert refusal("A1,X1\nScanned: today\n").problems == [
        "line 2: 'Scanned: today' is not a position (A1 or A01)"
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"Position,Barcode\n", "holds no positions"),
        (b"Rack ID: BOX-12\n", "holds no positions"),
        (b"A1,X\x00\n", "not a text (CSV) file"),
        (codecs.BOM_UTF8 + b"\xff\xfe bad", "says it is UTF-8"),
    ],
)
def test_files_that_are_not_a_rack_scan(data, words):
    assert words in refusal(data).message


def test_size_and_line_limits():
    assert f"at most {MAX_BYTES // 1_048_576} MB" in refusal(b"A1,X\n" * 300_000).message
    many = "".join(f"A1,X{n}\n" for n in range(MAX_LINES + 1))
    assert f"at most {MAX_LINES:,}" in refusal(many).message
    assert table(parse(b"A1,X1\n", max_bytes=6)) == [("A1", "X1", False)]
    assert "Nothing was stored" in refusal(b"A1,X1\n", max_bytes=5).message


def test_only_the_first_problems_are_listed_in_the_message():
    text = "".join(f"A1,X{n}\n" for n in range(40))
    problem = refusal(text)
    assert len(problem.problems) == 39
    assert "… and 19 more" in problem.message
