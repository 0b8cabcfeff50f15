"""Storage rules as data: temperature classes, box geometries, position names, suitability.

Pure: no Flask, no database. A position is stored as its index (1 .. capacity, row by row)
and shown by the box type's naming (``A1`` style or numbered), so a label scanned as ``A01``
and one typed as ``a1`` are the same place.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from enum import StrEnum


class TemperatureClass(StrEnum):
    """How cold a storage unit keeps its content (DOMAIN.md §6), coldest first."""

    LN2_VAPOUR = "ln2_vapour"
    MINUS_150 = "minus_150"
    MINUS_80 = "minus_80"
    MINUS_20 = "minus_20"
    FRIDGE = "fridge"
    ROOM = "room"

    @property
    def label(self) -> str:
        return {
            "ln2_vapour": "Vapour-phase LN2 (≤ −150 °C)",
            "minus_150": "−150 °C",
            "minus_80": "−80 °C",
            "minus_20": "−20 °C",
            "fridge": "2–8 °C",
            "room": "Room temperature",
        }[self.value]

    @property
    def rank(self) -> int:
        """0 for the coldest; a colder class has a lower rank."""
        return list(TemperatureClass).index(self)


class Naming(StrEnum):
    #: Rows as letters, columns as numbers: A1 .. H12.
    GRID = "grid"
    #: 1 .. capacity, row by row (bag cassettes, canisters with slots).
    NUMBERED = "numbered"


@dataclass(frozen=True)
class Geometry:
    rows: int
    columns: int
    naming: Naming = Naming.GRID

    def __post_init__(self) -> None:
        if not (1 <= self.rows <= 26 and 1 <= self.columns <= 99):
            raise ValueError("a box has 1 to 26 rows and 1 to 99 columns")

    @property
    def capacity(self) -> int:
        return self.rows * self.columns

    def name(self, index: int) -> str:
        """The position's name: ``A1`` style or its number."""
        if not 1 <= index <= self.capacity:
            raise PositionError(f"Position {index} is outside this box (1–{self.capacity}).")
        if self.naming is Naming.NUMBERED:
            return str(index)
        row, column = divmod(index - 1, self.columns)
        return f"{string.ascii_uppercase[row]}{column + 1}"

    def index(self, text: str) -> int:
        """The index of a position written ``A1``, ``A01``, ``a1`` or, numbered, ``12``."""
        raw = (text or "").strip().upper()
        grid = _GRID.fullmatch(raw)
        if grid and self.naming is Naming.GRID:
            row = string.ascii_uppercase.index(grid.group(1))
            column = int(grid.group(2))
            if row >= self.rows or not 1 <= column <= self.columns:
                raise PositionError(f"{raw} is outside this box (A1–{self.name(self.capacity)}).")
            return row * self.columns + column
        if raw.isascii() and raw.isdigit():  # int() takes "²" as a digit, then fails
            number = int(raw)
            if not 1 <= number <= self.capacity:
                raise PositionError(f"Position {raw} is outside this box (1–{self.capacity}).")
            return number
        raise PositionError(
            f"'{text}' is not a position of this box ({self.name(1)}–{self.name(self.capacity)})."
        )

    def names(self) -> list[str]:
        return [self.name(i) for i in range(1, self.capacity + 1)]


_GRID = re.compile(r"([A-Z])0*([0-9]{1,2})")


class PositionError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


#: Box types and their geometry. A container without positions (a canister, a bin, a dry
#: shipper) has a capacity instead of a geometry.
BOX_TYPES: dict[str, Geometry] = {
    "9x9": Geometry(9, 9),
    "10x10": Geometry(10, 10),
    "8x12": Geometry(8, 12),
    "cassette-1": Geometry(1, 1, Naming.NUMBERED),
    "cassette-5": Geometry(1, 5, Naming.NUMBERED),
}

#: The warmest class each material type may be kept in (configurable per site later).
WARMEST_ALLOWED: dict[str, TemperatureClass] = {
    "car_t_product": TemperatureClass.LN2_VAPOUR,
    "leukapheresis": TemperatureClass.LN2_VAPOUR,
    "product_retention": TemperatureClass.LN2_VAPOUR,
    "pbmc": TemperatureClass.MINUS_150,
    "cell_pellet": TemperatureClass.MINUS_80,
    "plasma": TemperatureClass.MINUS_80,
    "serum": TemperatureClass.MINUS_80,
    "rna": TemperatureClass.MINUS_80,
    "dna": TemperatureClass.MINUS_20,
    "whole_blood": TemperatureClass.FRIDGE,
}


def suitable(material_type: str, unit_class: TemperatureClass) -> str | None:
    """Why material of this type may not be kept at this temperature, or None if it may."""
    warmest = WARMEST_ALLOWED.get(material_type)
    if warmest is None or unit_class.rank <= warmest.rank:
        return None
    return (
        f"{material_type.replace('_', ' ')} is kept at {warmest.label} or colder, "
        f"not at {unit_class.label}."
    )
