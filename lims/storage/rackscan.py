"""Reading the file a 2D rack scanner writes: pure, no Flask and no database.

A rack scanner photographs the bottom of a rack of 2D-coded tubes and writes one row per
position. The makers' programs (Thermo VisionMate, Ziath DataPaq, Micronic, FluidX
Perception) write variations of the same thing:

- ``position,code`` rows, with ``A1`` or ``A01`` positions, with or without a header row
  (``Position,Barcode``, ``TUBE,BARCODE``, ``Rack,Position,TubeCode`` ...);
- comma, semicolon or tab between the columns; UTF-8 with or without a byte-order mark, UTF-16,
  Latin-1; CRLF line ends; blank lines at the end;
- the rack's own barcode either on a line of its own before the rows (``Rack ID: BOX-12``,
  ``RackID,BOX-12``, ``Rack Base Name: BOX-12``) or in a column of every row (FluidX and
  Micronic ``rack,position,code``); other ``key: value`` lines before the rows (the date and
  time of the scan, the scanner) are passed over;
- an empty cell, ``No Tube`` or ``EMPTY`` where no tube stands, and ``NO READ`` where a tube
  stands whose code could not be read: the two are kept apart (a tube that was not read is
  not a missing tube).

All or nothing: a file with one bad line is refused as a whole, and the refusal lists every
problem with its line number, so the person at the scanner can fix the export or scan again.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lims import textfiles
from lims.errors import DomainError, ValidationError

MAX_BYTES = 1024 * 1024
MAX_LINES = 2000
#: Problems named one by one in the refusal; the rest are counted.
MAX_LISTED = 20
#: The longest tube code the LIMS keeps (a storage code is at most 40 characters).
MAX_CODE_LENGTH = 40

#: Written in the code column for a position without a tube (compared after _word()).
NO_TUBE_WORDS = frozenset({"notube", "empty", "none", "na", "notubepresent", "notrakmate"})
#: Written for a tube whose code the scanner could not read.
NO_READ_WORDS = frozenset({"noread", "notread", "unreadable", "readerror", "noreading"})

#: Header names (compared after _word()) of the position, code, rack and status columns.
POSITION_NAMES = frozenset(
    {
        "position", "pos", "tubeposition", "tubepos", "well", "wellposition", "location",
        "tubelocation", "coordinate", "coordinates", "rackposition", "slot", "cavity",
    }
)  # fmt: skip
CODE_NAMES = frozenset(
    {
        "barcode", "code", "tubecode", "tubebarcode", "tubeid", "tubebc", "2dbarcode",
        "datamatrix", "sampleid", "samplebarcode", "samplecode", "vialid", "vialbarcode",
        "id", "value", "tube",
    }
)  # fmt: skip
RACK_NAMES = frozenset(
    {
        "rack", "rackid", "rackbarcode", "rackcode", "rackbasename", "rackname", "racknumber",
        "box", "boxid", "boxcode", "boxbarcode",
    }
)  # fmt: skip
STATUS_NAMES = frozenset({"status", "readstatus", "scanstatus", "result"})

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_POSITION = re.compile(r"([A-Za-z])0*([1-9][0-9]?)")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
#: A line naming the rack before the rows: "Rack ID: BOX-12", "RackID,BOX-12", "Rack = X".
_RACK_LINE = re.compile(
    r"\s*\"?(rack\s*(?:id|barcode|code|base\s*name|name|number|no\.?)?|box\s*(?:id|code|barcode)?)"
    r"\"?\s*[:=,;\t]\s*(?P<rest>.*)",
    re.IGNORECASE,
)
#: Any other "key: value" or "key = value" line before the rows (date and time of the scan,
#: the scanner, the operator): the key is words without digits.
_METADATA_LINE = re.compile(r"\s*\"?[A-Za-z][A-Za-z &/._()#-]*\"?\s*[:=]")


@dataclass(frozen=True)
class Reading:
    """What the scanner saw at one position."""

    #: The position as ``A1`` (upper case, no leading zero), whatever the file wrote.
    position_name: str
    #: The tube's code (normalised as the bench does), or None where no code was read.
    code: str | None
    #: The line of the file it came from (1 = the first line).
    line: int
    #: A tube stands there but its code could not be read ("NO READ"): not an empty position.
    unreadable: bool = False


@dataclass(frozen=True)
class RackScanFile:
    #: The rack identifier the file names (a line of its own or a rack column), if any.
    rack_id: str | None
    readings: list[Reading]


class RackScanError(ValidationError):
    """The file was refused; ``problems`` lists every problem found ("line 7: ...")."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, field="file")
        self.problems = problems or []


@dataclass(frozen=True)
class _Layout:
    position: int
    code: int
    rack: int | None = None
    status: int | None = None


class _BadLine(Exception):
    pass


def parse_rack_scan(
    data: bytes | str,
    *,
    normalise: Callable[[str], str] | None = None,
    max_bytes: int = MAX_BYTES,
    max_lines: int = MAX_LINES,
) -> RackScanFile:
    """The rack identifier and the readings of a rack scanner's file, or a RackScanError.

    ``normalise`` turns a scanned code into the code the LIMS keeps (the bench's
    ``code_from_scan``, which unwraps ISBT 128 data identifiers); it may raise a ValueError
    or a DomainError, which is reported as a problem of that line. Without it a code is
    only stripped and upper-cased.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise RackScanError(
            f"The file is {len(raw) / 1_048_576:.1f} MB; a rack scan file may be at most "
            f"{max_bytes / 1_048_576:.0f} MB. Nothing was stored."
        )
    try:
        text = data if isinstance(data, str) else textfiles.decode(data)
    except textfiles.NotText as exc:
        raise RackScanError(exc.message) from None
    if "\x00" in text:
        raise RackScanError(
            "This is not a text (CSV) file: export the rack scan as CSV or TXT. "
            "Nothing was stored."
        )
    lines = _LINE_BREAK.split(text.removeprefix("\ufeff"))
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise RackScanError("The file is empty. Nothing was stored.")
    if len(lines) > max_lines:
        raise RackScanError(
            f"The file has {len(lines):,} lines; a rack scan has at most {max_lines:,} "
            "(one per position). Is it the right file? Nothing was stored."
        )
    return _Parser(lines, normalise or _upper).parse()


def _upper(code: str) -> str:
    return code.strip().upper()


class _Parser:
    def __init__(self, lines: list[str], normalise: Callable[[str], str]) -> None:
        self.lines = lines
        # No separator at all: read as comma-separated (positions alone are refused by line).
        self.separator = textfiles.commonest_separator(lines, sample=200) or ","
        self.normalise = normalise
        self.problems: list[str] = []
        self.layout: _Layout | None = None
        self.rack_id: str | None = None
        self.rack_line = 0
        self.readings: list[Reading] = []
        self.position_lines: dict[str, int] = {}
        self.code_lines: dict[str, int] = {}

    def parse(self) -> RackScanFile:
        for number, text, cells in self._rows():
            try:
                if not self.readings and self._preamble(number, text, cells):
                    continue
                self._row(number, cells)
            except _BadLine as exc:
                self.problems.append(f"line {number}: {exc}")
        if self.problems:
            listed = "; ".join(self.problems[:MAX_LISTED])
            more = len(self.problems) - MAX_LISTED
            tail = f"; … and {more} more" if more > 0 else ""
            count = len(self.problems)
            raise RackScanError(
                f"The rack scan file was not read, nothing was stored: {count} "
                f"problem{'s' if count != 1 else ''} ({listed}{tail}).",
                self.problems,
            )
        if not self.readings:
            raise RackScanError(
                "The file holds no positions (rows like 'A1,<tube code>'). Is it the rack "
                "scanner's export? Nothing was stored."
            )
        return RackScanFile(self.rack_id, self.readings)

    def _rows(self) -> Iterator[tuple[int, str, list[str]]]:
        """Non-blank lines as (line number, text, cells); a line is one row (no line breaks
        inside quoted cells in a scanner's file)."""
        for number, text in enumerate(self.lines, 1):
            if not _trim(text):
                continue
            try:
                cells = next(csv.reader([text], delimiter=self.separator))
            except csv.Error as exc:
                self.problems.append(f"line {number}: not valid CSV ({exc})")
                continue
            cells = [_trim(cell) for cell in cells]
            if any(cells):
                yield number, text, cells

    # -- before the first position: header, rack line, other key: value lines -------------

    def _preamble(self, number: int, text: str, cells: list[str]) -> bool:
        """Whether the line is read as a header, rack or metadata line (True) or is a row."""
        if not any(_position(cell) for cell in cells):
            header = _header_layout(cells)
            if header is not None:
                if self.layout is not None:
                    raise _BadLine("a second header row")
                self.layout = header
                return True
            if self.layout is None and (rack := _RACK_LINE.fullmatch(text)):
                self._rack_line(number, rack.group("rest"))
                return True
            if self.layout is None and _METADATA_LINE.match(text):
                return True  # the date and time of the scan, the scanner, the operator
        if self.layout is None:
            self.layout = _row_layout(cells)
        return False

    def _rack_line(self, number: int, rest: str) -> None:
        names = [cell.strip().strip('"').strip() for cell in re.split(r"[,;\t]", rest)]
        names = [name for name in names if name]
        if len(names) != 1:
            raise _BadLine("a rack line names one rack (e.g. 'Rack ID: BOX-12')")
        if self.rack_id is not None:
            raise _BadLine(f"a second rack line (the rack is named on line {self.rack_line})")
        self.rack_id, self.rack_line = _rack_name(names[0]), number

    # -- the rows ---------------------------------------------------------------------------

    def _row(self, number: int, cells: list[str]) -> None:
        layout = self.layout
        if layout is None:  # pragma: no cover - _preamble sets it
            raise _BadLine("no layout")
        written = _cell(cells, layout.position)
        position = _position(written)
        if position is None:
            if not written:
                raise _BadLine("no position (expected e.g. 'A1,<tube code>')")
            raise _BadLine(f"'{_shorten(written)}' is not a position (A1 or A01)")
        if layout.rack is not None:
            self._rack_cell(number, _cell(cells, layout.rack))
        code, unreadable = self._code(_cell(cells, layout.code))
        if code is None and not unreadable and layout.status is not None:
            unreadable = _word(_cell(cells, layout.status)) in NO_READ_WORDS
        first = self.position_lines.setdefault(position, number)
        if first != number:
            raise _BadLine(f"position {position} again (first on line {first})")
        if code is not None:
            seen = self.code_lines.setdefault(code, number)
            if seen != number:
                raise _BadLine(f"tube {_shorten(code)} again (first on line {seen})")
        self.readings.append(Reading(position, code, number, unreadable))

    def _rack_cell(self, number: int, written: str) -> None:
        if not written:
            return
        name = _rack_name(written)
        if self.rack_id is None:
            self.rack_id, self.rack_line = name, number
        elif name != self.rack_id:
            raise _BadLine(
                f"rack {_shorten(name)} where line {self.rack_line} names rack "
                f"{_shorten(self.rack_id)}: export one rack per file"
            )

    def _code(self, written: str) -> tuple[str | None, bool]:
        """The tube code in a cell, and whether the cell says the tube was not read."""
        if any(unicodedata.category(char) in ("Cc", "Cf") for char in written):
            raise _BadLine("the code holds a control character (not a tube code)")
        word = _word(written)
        if not word or word in NO_TUBE_WORDS:
            return None, False
        if word in NO_READ_WORDS:
            return None, True
        if len(written) > MAX_CODE_LENGTH:
            # Not echoed: a wrong barcode may carry anything, a CPR number too.
            raise _BadLine(
                f"a code of {len(written)} characters; a tube code has at most "
                f"{MAX_CODE_LENGTH}"
            )
        try:
            code = self.normalise(written)
        except (ValueError, DomainError) as exc:
            raise _BadLine(getattr(exc, "message", None) or str(exc)) from None
        if not code or len(code) > MAX_CODE_LENGTH:
            raise _BadLine("not a tube code")
        return code, False


# -- helpers --------------------------------------------------------------------------------


def _trim(cell: str) -> str:
    """Spaces around a cell go; control characters stay, to be refused (str.strip() would
    quietly drop a trailing group separator, which is no part of a tube code)."""
    return cell.strip(" \t\u00a0")


def _word(text: str) -> str:
    return _NOT_WORD.sub("", text.strip().strip('"').lower())


def _position(text: str) -> str | None:
    """``A1``, ``A01``, ``a1`` as ``A1``; None when the text is not a position."""
    match = _POSITION.fullmatch(text.strip().strip('"'))
    if match is None:
        return None
    return f"{match.group(1).upper()}{int(match.group(2))}"


def _cell(cells: list[str], index: int) -> str:
    return cells[index] if index < len(cells) else ""


def _rack_name(text: str) -> str:
    return " ".join(text.split()).upper()


def _header_layout(cells: list[str]) -> _Layout | None:
    """The columns a header row names, or None when the row is not a header."""
    words = [_word(cell) for cell in cells]

    def first(names: frozenset[str], skip: int | None = None) -> int | None:
        return next((i for i, w in enumerate(words) if w in names and i != skip), None)

    position = first(POSITION_NAMES)
    if position is None:
        # VisionMate calls the position column "TUBE" next to a "BARCODE" column.
        tube = first(frozenset({"tube"}))
        if tube is None or first(CODE_NAMES - {"tube"}) is None:
            return None
        position = tube
    code = first(CODE_NAMES - {"tube"}, skip=position)
    if code is None:
        code = first(frozenset({"tube"}), skip=position)
    if code is None:
        raise _BadLine(
            "the header names the position column but no code column (e.g. 'Barcode')"
        )
    return _Layout(
        position=position,
        code=code,
        rack=first(RACK_NAMES),
        status=first(STATUS_NAMES),
    )


def _row_layout(cells: list[str]) -> _Layout:
    """Without a header: the first cell that is a position is the position column, the next
    one the code; a cell before the position is the rack (FluidX, Micronic)."""
    position = next((i for i, cell in enumerate(cells) if _position(cell)), None)
    if position is None:
        raise _BadLine(
            "neither a header (e.g. 'Position,Barcode'), a rack line (e.g. 'Rack ID: "
            "BOX-12') nor a position row (e.g. 'A1,<tube code>')"
        )
    return _Layout(position=position, code=position + 1, rack=position - 1 if position else None)


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
