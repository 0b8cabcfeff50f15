"""Reading one cell of an import file: numbers, whole numbers, dates and times.

Pure: no Flask, no database. Each reader raises :class:`CellError` with a message for the
per-row report. Numbers may carry a decimal comma (Danish Excel writes ``1,5``): a comma is
always a decimal comma, never a thousands separator, and spaces inside a number are ignored
(``1 000,5``). Dates are ISO (``2024-03-05``) or Danish day-first (``05-03-2024``, also with
``.`` or ``/``), optionally with a time (``14:30``); they are local time at the site.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_ISO = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
)
_DAY_FIRST = re.compile(
    r"(\d{1,2})([-./])(\d{1,2})\2(\d{4})(?:[ T]+(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?)?"
)


class CellError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decimal_number(text: str) -> Decimal:
    """``1.5``, ``1,5``, ``1 000,5`` or ``5E+06`` as a Decimal."""
    raw = "".join(str(text).split())
    if "," in raw:
        if "." in raw or raw.count(",") > 1:
            raise CellError(
                f"'{text}' is not a number: write it without thousands separators "
                "(1500 or 1,5)."
            )
        raw = raw.replace(",", ".")
    if not _NUMBER.fullmatch(raw):
        raise CellError(f"'{text}' is not a number.")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise CellError(f"'{text}' is not a number.") from None
    if not value.is_finite():
        raise CellError(f"'{text}' is not a number.")
    return value


def whole_number(text: str, *, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` (``12``, also ``12.0`` as a sheet may write)."""
    try:
        value = decimal_number(text)
    except CellError:
        raise CellError(f"'{text}' is not a whole number.") from None
    if value != value.to_integral_value():
        raise CellError(f"'{text}' is not a whole number.")
    number = int(value)
    if not low <= number <= high:
        raise CellError(f"{number} is outside {low}–{high}.")
    return number


def local_datetime(text: str, *, zone: tzinfo, now: datetime) -> datetime:
    """A local date (midnight) or date and time, as UTC; refuses a time after ``now``."""
    raw = " ".join(str(text).split())
    iso, danish = _ISO.fullmatch(raw), _DAY_FIRST.fullmatch(raw)
    if iso:
        year, month, day, hour, minute, second = iso.groups()
    elif danish:
        day, _, month, year, hour, minute, second = danish.groups()
    else:
        raise CellError(
            f"'{text}' is not a date: write 2024-03-05 or 05-03-2024, with a time if known "
            "(2024-03-05 14:30)."
        )
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=zone,
        )
    except ValueError:
        raise CellError(f"'{text}' is not a date that exists.") from None
    moment = local.astimezone(UTC)
    if moment > now:
        raise CellError(f"'{text}' is in the future.")
    return moment
