"""The temperature-logger CSV parser: formats, headers, separators, encodings, bad rows, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from lims.errors import ValidationError
from lims.shipments.logger import MAX_BYTES, MAX_ROWS, LoggerFileError, parse_logger_csv

CPH = "Europe/Copenhagen"


def parse(text: str | bytes, **options):
    data = text.encode() if isinstance(text, str) else text
    return parse_logger_csv(data, zone=options.pop("zone", CPH), **options)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def pairs(readings) -> list[tuple[str, str]]:
    return [(r.at.isoformat(), str(r.celsius)) for r in readings]


# -- time formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        # ISO 8601 with an offset or Z: the offset decides, not the zone.
        ("2025-03-01T10:00:00+01:00", utc(2025, 3, 1, 9, 0)),
        ("2025-03-01T10:00:00+0530", utc(2025, 3, 1, 4, 30)),
        ("2025-03-01T10:00:00Z", utc(2025, 3, 1, 10, 0)),
        ("2025-03-01T10:00:00.250+00:00", utc(2025, 3, 1, 10, 0, 0, 250000)),
        # Without an offset: local time in the zone (winter UTC+1, summer UTC+2).
        ("2025-03-01T10:00:00", utc(2025, 3, 1, 9, 0)),
        ("2025-07-01 10:00", utc(2025, 7, 1, 8, 0)),
        ("2025-07-01 10:00:30", utc(2025, 7, 1, 8, 0, 30)),
        ("01.07.2025 10:00", utc(2025, 7, 1, 8, 0)),
        ("1.7.2025 09:05:07", utc(2025, 7, 1, 7, 5, 7)),
        ("01/03/2025 10:00", utc(2025, 3, 1, 9, 0)),  # day first: 1 March
        ("13/03/2025 10:00:59", utc(2025, 3, 13, 9, 0, 59)),
    ],
)
def test_each_time_format(written, expected):
    (reading,) = parse(f"{written};5.0\n")
    assert reading.at == expected
    assert reading.at.tzinfo is UTC


def test_naive_times_use_the_zone_given():
    (reading,) = parse("2025-03-01 10:00,5\n", zone="America/New_York")
    assert reading.at == utc(2025, 3, 1, 15, 0)


def test_the_repeated_autumn_hour_is_read_as_the_first():
    (reading,) = parse("2025-10-26 02:30,5\n")
    assert reading.at == utc(2025, 10, 26, 0, 30)


def test_an_unknown_zone_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown time zone"):
        parse("2025-03-01 10:00,5\n", zone="Mars/Olympus")


# -- header or not ----------------------------------------------------------------------------


def test_without_header_the_first_column_is_time_and_the_second_temperature():
    readings = parse("2025-03-01 10:00,4.5\n2025-03-01 10:05,-80.25\n")
    assert pairs(readings) == [
        ("2025-03-01T09:00:00+00:00", "4.5"),
        ("2025-03-01T09:05:00+00:00", "-80.25"),
    ]
    assert [r.line for r in readings] == [1, 2]


@pytest.mark.parametrize(
    "header",
    [
        "Time,Temperature",
        "timestamp,temp",
        "Date,°C",
        "DateTime,Temperature (°C)",
        "Date Time,Temp[°C]",
        "date_time,celsius",
        '"Time","Temperature (°C)"',
    ],
)
def test_columns_found_by_their_header_names(header):
    (reading,) = parse(f"{header}\n2025-03-01 10:00,5.5\n")
    assert (reading.line, reading.at, reading.celsius) == (2, utc(2025, 3, 1, 9, 0), Decimal("5.5"))


def test_header_columns_in_any_order_with_others_beside():
    text = (
        "No.;Temperature °C;Humidity %;Timestamp\n"
        "1;5,5;40;2025-03-01 10:00\n"
        "2;6,0;41;2025-03-01 10:05\n"
    )
    assert pairs(parse(text)) == [
        ("2025-03-01T09:00:00+00:00", "5.5"),
        ("2025-03-01T09:05:00+00:00", "6.0"),
    ]


def test_separate_date_and_time_columns_are_read_together():
    (reading,) = parse("Date;Time;Temp\n01.03.2025;10:00:00;5,5\n")
    assert reading.at == utc(2025, 3, 1, 9, 0)


def test_a_header_saying_utc_makes_naive_times_utc():
    (reading,) = parse("Time (UTC),Temperature\n2025-03-01 10:00,5.5\n")
    assert reading.at == utc(2025, 3, 1, 10, 0)


def test_a_first_line_that_is_neither_header_nor_reading_is_refused():
    with pytest.raises(LoggerFileError, match="Line 1: neither a header"):
        parse("Logger report;S/N 1234\n2025-03-01 10:00;5\n")


def test_a_header_without_a_temperature_column_is_refused():
    with pytest.raises(LoggerFileError, match="no temperature column"):
        parse("Time;Humidity\n2025-03-01 10:00;40\n")


def test_a_header_without_a_time_column_is_refused():
    with pytest.raises(LoggerFileError, match="no time column"):
        parse("Index;Temperature\n1;5\n")


# -- separators and decimal marks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01 10:00,5.5\n", "5.5"),
        ("2025-03-01 10:00;5.5\n", "5.5"),
        ("2025-03-01 10:00\t5.5\n", "5.5"),
        ("2025-03-01 10:00;5,5\n", "5.5"),  # decimal comma beside a semicolon
        ("2025-03-01 10:00\t-79,9\n", "-79.9"),  # and beside a tab
        ('"2025-03-01 10:00";"5,5"\n', "5.5"),
        ("2025-03-01 10:00;+5.5 °C\n", "5.5"),
        ("2025-03-01 10:00;5;\n", "5"),  # a trailing separator
    ],
)
def test_separators_are_sniffed_and_a_decimal_comma_accepted(text, expected):
    (reading,) = parse(text)
    assert reading.celsius == Decimal(expected)


def test_a_decimal_comma_in_a_comma_separated_file_is_refused_not_misread():
    with pytest.raises(LoggerFileError) as refused:
        parse("time,temp\n2025-03-01 10:00,5\n2025-03-01 10:05,5,5\n")
    assert refused.value.problems == [
        "line 3: 3 columns where line 1 has 2 (a decimal comma in a comma-separated file?)"
    ]


def test_no_separator_is_refused():
    with pytest.raises(LoggerFileError, match="No column separator"):
        parse("2025-03-01 10:00 5.5\n")


def test_blank_lines_are_skipped_and_line_numbers_stay_those_of_the_file():
    readings = parse("\r\nTime;Temp\r\n\r\n2025-03-01 10:00;5\r\n\r\n2025-03-01 10:05;6\r\n")
    assert [r.line for r in readings] == [4, 6]


# -- encodings ----------------------------------------------------------------------------------


def test_utf8_with_a_byte_order_mark():
    data = "\ufeffTime;Temperature (°C)\n2025-03-01 10:00;5,5\n".encode()
    assert parse(data)[0].celsius == Decimal("5.5")


def test_utf8_without_a_byte_order_mark():
    data = "Tid;Temperatur °C\n01.03.2025 10:00;-5,5\n".encode()
    assert parse(data)[0].celsius == Decimal("-5.5")


def test_latin1():
    data = "Time;Temperature (°C)\n01.03.2025 10:00;5,5\n".encode("latin-1")
    assert data != "Time;Temperature (°C)".encode()  # really not UTF-8
    assert parse(data)[0].celsius == Decimal("5.5")


def test_utf16_with_a_byte_order_mark():
    data = "Time\tTemp\n2025-03-01 10:00\t5.5\n".encode("utf-16")
    assert parse(data)[0].celsius == Decimal("5.5")


def test_a_binary_file_is_refused():
    with pytest.raises(LoggerFileError, match="not a text"):
        parse(b"\x00\x01\x02;\x00\n")


# -- bad rows -----------------------------------------------------------------------------------


def test_every_bad_row_is_named_by_its_line_and_nothing_is_returned():
    text = (
        "Time;Temp\n"
        "01.03.2025 10:00;5,0\n"
        "31.02.2025 10:05;5,1\n"  # no such date
        "soon;5,2\n"
        "01.03.2025 10:15;warm\n"
        "01.03.2025 10:20\n"
        "01.03.2025 10:25;-300\n"
        "01.03.2025 10:30;150\n"
        "01.03.2025 10:35;1.000,5\n"
    )
    with pytest.raises(LoggerFileError) as refused:
        parse(text)
    problems = refused.value.problems
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(3, 10)]
    assert "'31.02.2025 10:05' is not a date and time that exists" in problems[0]
    assert "'soon' is not a time" in problems[1]
    assert "'warm' is not a temperature" in problems[2]
    assert "expected a time and a temperature separated by a semicolon" in problems[3]
    assert "-300 °C is not a plausible temperature (-273.15 to 100 °C)" in problems[4]
    assert "150 °C is not a plausible" in problems[5]
    assert "is not a temperature" in problems[6]
    message = refused.value.message
    assert message.startswith("The logger file was not read, nothing was stored: 7 bad rows")
    assert all(problem in message for problem in problems)
    assert isinstance(refused.value, ValidationError) and refused.value.status_code == 422


def test_the_list_of_bad_rows_is_capped():
    text = "Time;Temp\n" + "".join(f"01.03.2025 10:{n:02d};x\n" for n in range(25))
    with pytest.raises(LoggerFileError) as refused:
        parse(text)
    assert len(refused.value.problems) == 25
    message = refused.value.message
    assert "25 bad rows" in message and "line 21:" in message and "line 22:" not in message
    assert message.endswith("… and 5 more bad rows).")


def test_the_plausible_range_is_inclusive():
    readings = parse("2025-03-01 10:00;-273,15\n2025-03-01 10:05;100\n")
    assert [r.celsius for r in readings] == [Decimal("-273.15"), Decimal("100")]


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"])
def test_an_empty_file_is_refused(data):
    with pytest.raises(LoggerFileError, match="empty"):
        parse(data)


def test_a_header_without_readings_is_refused():
    with pytest.raises(LoggerFileError, match="no readings"):
        parse("Time;Temperature\n")


def test_a_file_over_5_mb_is_refused_before_reading():
    data = b"2025-03-01 10:00,5\n" * (MAX_BYTES // 19 + 1)
    assert len(data) > MAX_BYTES
    with pytest.raises(LoggerFileError, match="at most 5 MB"):
        parse(data)


def test_at_most_200000_readings():
    rows = "".join(f"2025-03-01 {n // 60 % 24:02d}:{n % 60:02d},5\n" for n in range(MAX_ROWS))
    assert len(parse(rows)) == MAX_ROWS
    with pytest.raises(LoggerFileError, match="more than 200,000 readings"):
        parse(rows + "2025-03-02 10:00,5\n")
