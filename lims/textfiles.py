"""Text files instruments write (temperature loggers, rack scanners): their encoding and the
separator between their columns. Pure: no Flask, no database."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

#: On a tie, tab before semicolon before comma: a file with a semicolon or a tab between its
#: columns may use the comma as its decimal mark.
SEPARATORS = ("\t", ";", ",")


class NotText(ValueError):
    """The file says what it is (a byte-order mark) and is not that."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode(data: bytes) -> str:
    """UTF-8 or UTF-16 by their byte-order marks, else UTF-8, else Latin-1 (which reads any
    byte, so an instrument's old Windows export is still read)."""
    for bom, encoding, name in (
        (codecs.BOM_UTF8, "utf-8", "UTF-8"),
        (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
        (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
    ):
        if data.startswith(bom):
            try:
                return (data[len(bom) :] if encoding == "utf-8" else data).decode(encoding)
            except UnicodeDecodeError:
                raise NotText(
                    f"The file says it is {name} but is not: export it again. Nothing was stored."
                ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def commonest_separator(lines: Sequence[str], *, sample: int) -> str | None:
    """The separator most of the first ``sample`` non-blank lines hold, or None if none does."""
    chosen = [line for line in lines if line.strip()][:sample]
    counts = {sep: sum(1 for line in chosen if sep in line) for sep in SEPARATORS}
    best = max(counts.values())
    return next(sep for sep in SEPARATORS if counts[sep] == best) if best else None
