"""Reading a temperature logger's CSV export: pure, no Flask and no database.

Loggers from different makers write different files: a header row or none, comma, semicolon or
tab between the columns, a decimal comma where the separator is not a comma, ISO 8601 times or
European day-first ones, UTF-8 (with or without a byte-order mark) or Latin-1. The parser finds
the time and the temperature columns by their header names (or takes the first two columns when
there is no header) and converts every time to UTC.

All or nothing: a file with one bad row stores nothing, and the refusal names every bad row by
its line number, so the person uploading can correct the file or fetch a new export.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lims import textfiles
from lims.errors import ValidationError

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 200_000
#: Bad rows named one by one in the refusal; the rest are counted.
MAX_LISTED = 20
LOWEST_C = Decimal("-273.15")
HIGHEST_C = Decimal("100")
SEPARATOR_NAMES = {"\t": "tab", ";": "semicolon", ",": "comma"}

#: Header names of a column holding date and time together (compared after _name()).
DATETIME_NAMES = frozenset(
    {
        "timestamp", "time stamp", "datetime", "date time", "date and time", "time", "zeit",
        "tid", "tidspunkt", "dato tid", "dato og tid", "datum zeit", "datum uhrzeit",
        "local time", "utc time", "time utc", "date", "dato", "datum",
    }
)  # fmt: skip
#: Names of a column with the date only, and of one with the clock time only: when a file has
#: both (and no combined column) the two are read together.
DATE_ONLY_NAMES = frozenset({"date", "dato", "datum"})
CLOCK_ONLY_NAMES = frozenset({"time", "tid", "zeit", "uhrzeit", "clock"})

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_UNIT = re.compile(r"\(.*?\)|\[.*?\]")
_PUNCTUATION = re.compile(r"[_/\-.:]+")
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?",
    re.IGNORECASE,
)
_DAY_FIRST = re.compile(
    r"(\d{1,2})([./])(\d{1,2})\2(\d{4})[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:[.,](\d{1,6}))?"
)
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")
_DEGREES = re.compile(r"\s*(°\s*C|°|C)$", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    #: The line of the file it came from (1 = the first line).
    line: int
    #: Timezone-aware, in UTC.
    at: datetime
    celsius: Decimal


class LoggerFileError(ValidationError):
    """The file was refused; ``problems`` lists every bad row found ("line 7: ...")."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, field="file")
        self.problems = problems or []


@dataclass(frozen=True)
class _Layout:
    time: int
    temperature: int
    #: A separate date column read together with ``time`` (which then holds the clock only).
    date: int | None = None
    #: The header says the times are UTC ("Time (UTC)"): naive times are not local.
    utc: bool = False

    @property
    def needed(self) -> int:
        return max(self.time, self.temperature, self.date or 0) + 1


def parse_logger_csv(
    data: bytes, *, zone: str, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS
) -> list[Reading]:
    """The readings of a logger file, times in UTC, or a :class:`LoggerFileError`.

    ``zone`` is the time zone of times written without an offset (e.g. "Europe/Copenhagen").
    In the hour repeated when summer time ends such a time is taken as the first of the two.
    """
    try:
        local = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r}") from None
    if len(data) > max_bytes:
        raise LoggerFileError(
            f"The file is {len(data) / 1_048_576:.1f} MB; a logger file may be at most "
            f"{max_bytes / 1_048_576:.0f} MB. Nothing was stored."
        )
    try:
        text = textfiles.decode(data)
    except textfiles.NotText as exc:
        raise LoggerFileError(exc.message) from None
    if not text.strip():
        raise LoggerFileError("The file is empty. Nothing was stored.")
    if "\x00" in text:
        raise LoggerFileError(
            "This is not a text (CSV) file: export the logger's readings as CSV. "
            "Nothing was stored."
        )
    lines = _LINE_BREAK.split(text)
    separator = textfiles.commonest_separator(lines, sample=50)
    if separator is None:
        raise LoggerFileError(
            "No column separator found: each line needs a time and a temperature separated by "
            "a comma, a semicolon or a tab. Nothing was stored."
        )
    rows = _rows(lines, separator)
    first = next(rows, None)
    if first is None:
        raise LoggerFileError("The file is empty. Nothing was stored.")
    first_line, first_cells = first
    pending: list[tuple[int, list[str]]] = []
    if _looks_like_time(first_cells[0]):
        # No header: time first, temperature second (whatever else the row holds, "5 °C").
        layout = _Layout(time=0, temperature=1)
        pending.append(first)
    else:
        layout = _header_layout(first_cells)
        if layout is None:
            raise LoggerFileError(
                f"Line {first_line}: neither a header naming the time and temperature columns "
                "(e.g. 'Time;Temperature (°C)') nor a reading (time first, temperature "
                "second). Nothing was stored."
            )
    # A row wider than the first one most often hides a decimal comma in a comma-separated
    # file ("5,5" read as 5 and 5): refused rather than read as the wrong temperature.
    width = _width(first_cells)
    readings: list[Reading] = []
    problems: list[str] = []
    for count, (line, cells) in enumerate(_chain(pending, rows), 1):
        if count > max_rows:
            raise LoggerFileError(
                f"The file has more than {max_rows:,} readings; export a shorter period "
                "(or a longer interval between readings). Nothing was stored."
            )
        try:
            if _width(cells) > width:
                raise _BadRow(
                    f"{_width(cells)} columns where line {first_line} has {width}"
                    + (" (a decimal comma in a comma-separated file?)" if separator == "," else "")
                )
            readings.append(_reading(line, cells, layout, local, separator))
        except _BadRow as exc:
            problems.append(f"line {line}: {exc}")
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = len(problems) - MAX_LISTED
        tail = f"; … and {more} more bad row{'s' if more != 1 else ''}" if more > 0 else ""
        raise LoggerFileError(
            f"The logger file was not read, nothing was stored: {len(problems)} bad "
            f"row{'s' if len(problems) != 1 else ''} ({listed}{tail}).",
            problems,
        )
    if not readings:
        raise LoggerFileError("The file has a header but no readings. Nothing was stored.")
    return readings


class _BadRow(Exception):
    pass


def _rows(lines: list[str], separator: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the number of the line they end on."""
    reader = csv.reader(lines, delimiter=separator)
    try:
        for cells in reader:
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                yield reader.line_num, stripped
    except csv.Error as exc:
        raise LoggerFileError(
            f"Line {reader.line_num}: the file is not valid CSV ({exc}). Nothing was stored."
        ) from None


def _chain(
    first: list[tuple[int, list[str]]], rest: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    yield from first
    yield from rest


def _width(cells: list[str]) -> int:
    """The number of columns, not counting empty ones at the end (a trailing separator)."""
    width = len(cells)
    while width and not cells[width - 1]:
        width -= 1
    return width


def _name(cell: str) -> str:
    text = _PUNCTUATION.sub(" ", cell.strip().strip('"').lower())
    return " ".join(text.split())


def _is_temperature(name: str) -> bool:
    return "temp" in name or "°c" in name or name in {"c", "celsius", "deg c", "degc"}


def _header_layout(cells: list[str]) -> _Layout | None:
    """The columns a header row names, or None when the row is not a header."""
    names = [_name(cell) for cell in cells]
    bare = [" ".join(_UNIT.sub(" ", name).split()) for name in names]
    temperature = next((i for i, name in enumerate(names) if _is_temperature(name)), None)
    date = next((i for i, name in enumerate(bare) if name in DATE_ONLY_NAMES), None)
    clock = next((i for i, name in enumerate(bare) if name in CLOCK_ONLY_NAMES), None)
    combined = next(
        (
            i
            for i, name in enumerate(bare)
            if name in DATETIME_NAMES - DATE_ONLY_NAMES - CLOCK_ONLY_NAMES
        ),
        None,
    )
    if temperature is None:
        if combined is not None or date is not None or clock is not None:
            raise LoggerFileError(
                "The header names no temperature column (e.g. 'Temperature (°C)' or "
                "'Temp'). Nothing was stored."
            )
        return None
    if combined is not None:
        time, date_column = combined, None
    elif date is not None and clock is not None:
        time, date_column = clock, date
    elif date is not None or clock is not None:
        time, date_column = (date if date is not None else clock), None
    else:
        raise LoggerFileError(
            "The header names no time column (e.g. 'Time', 'Timestamp' or 'Date time'). "
            "Nothing was stored."
        )
    columns = [time] if date_column is None else [time, date_column]
    utc = any(re.search(r"\b(utc|gmt)\b", names[i]) for i in columns)
    return _Layout(time=time, temperature=temperature, date=date_column, utc=utc)


def _looks_like_time(cell: str) -> bool:
    text = cell.strip().strip('"')
    return bool(_ISO.fullmatch(text) or _DAY_FIRST.fullmatch(text))


def _reading(
    line: int, cells: list[str], layout: _Layout, local: ZoneInfo, separator: str
) -> Reading:
    if len(cells) < layout.needed or not cells[layout.time] or not cells[layout.temperature]:
        raise _BadRow(
            f"expected a time and a temperature separated by a {SEPARATOR_NAMES[separator]}"
        )
    written = cells[layout.time]
    if layout.date is not None:
        written = f"{cells[layout.date]} {written}"
    at = _time(written, UTC if layout.utc else local)
    return Reading(line=line, at=at, celsius=_celsius(cells[layout.temperature]))


def _time(text: str, zone: tzinfo) -> datetime:
    text = " ".join(text.strip().strip('"').split())
    try:
        if _ISO.fullmatch(text):
            moment = datetime.fromisoformat(text.upper().replace(",", "."))
        elif match := _DAY_FIRST.fullmatch(text):
            day, _, month, year, hour, minute, second, fraction = match.groups()
            moment = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                int((fraction or "0").ljust(6, "0")),
            )
        else:
            raise _BadRow(
                f"'{_shorten(text)}' is not a time (e.g. 2025-03-01 14:05, "
                "2025-03-01T14:05:00+01:00, 01.03.2025 14:05 or 01/03/2025 14:05)"
            )
    except ValueError:
        raise _BadRow(f"'{_shorten(text)}' is not a date and time that exists") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _celsius(text: str) -> Decimal:
    value = _DEGREES.sub("", text.strip().strip('"')).strip()
    if not _NUMBER.fullmatch(value):
        raise _BadRow(f"'{_shorten(text)}' is not a temperature")
    try:
        celsius = Decimal(value.replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise _BadRow(f"'{_shorten(text)}' is not a temperature") from None
    if not LOWEST_C <= celsius <= HIGHEST_C:
        raise _BadRow(
            f"{_shorten(text)} °C is not a plausible temperature ({LOWEST_C} to {HIGHEST_C} °C)"
        )
    return celsius


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
